#!/bin/sh
# Provision a build host (e.g. an ARM64 Graviton2+ machine) as a vllm-cpu worker.
# On the master first:  python -m workers add --name NAME --arch aarch64 --admin you@example.org
# then here, as the user that will run builds:
#   WORKER_NAME=NAME WORKER_PASSWORD='...' MASTER=master.example.org:9989 sh provision.sh
# Needs: Debian/Ubuntu with sudo. Installs git, a C/C++ toolchain (GCC >= 12.3 for the
# ISA flags), cmake, python3-venv; buildbot-worker into ~/vllm-cpu-worker/venv; the worker's
# toolchain dependencies are installed by the first build (cached venv per requirements hash).
set -eu
: "${WORKER_NAME:?set WORKER_NAME}" "${WORKER_PASSWORD:?set WORKER_PASSWORD}" "${MASTER:?set MASTER host:port}"
BASE="${BASE:-$HOME/vllm-cpu-worker}"
# root (a container, a fresh cloud image) may have no sudo at all.
SUDO=sudo; [ "$(id -u)" = 0 ] && SUDO=
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  git gcc g++ cmake ccache make python3 python3-venv python3-dev
# x86_64: the ISA packages of vLLM < 0.17 need GCC >= 12.3 (older upstream cmake
# silently drops VNNI/BF16/AMX; `build` refuses such a compiler). Use a newer
# distro GCC when the default is older; aarch64 builds are fine with any GCC 12.
gcc_ok() { "$1" -dumpfullversion 2>/dev/null | awk -F. 'NR == 1 { ok = ($1 > 12 || ($1 == 12 && $2 >= 3)) } END { exit !ok }'; }
COMPILER=""
if [ "$(uname -m)" = x86_64 ] && ! gcc_ok gcc; then
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
"$BASE/venv/bin/buildbot-worker" create-worker --umask=0o22 "$BASE/worker" "$MASTER" "$WORKER_NAME" "$WORKER_PASSWORD"
echo "$(whoami)@$(hostname)" > "$BASE/worker/info/admin"
(uname -m; grep -m1 -E '^(Features|flags)' /proc/cpuinfo) > "$BASE/worker/info/host"
# The toolchain is started with the worker's python3: put the venv first on PATH.
cat > "$BASE/start.sh" <<EOS
#!/bin/sh
PATH="$BASE/venv/bin:\$PATH" $COMPILER exec "$BASE/venv/bin/buildbot-worker" start "$BASE/worker"
EOS
chmod +x "$BASE/start.sh"
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
