"""An emulated aarch64 build host: a Debian arm64 root run through qemu-user.

The pipeline's aarch64 path (vllm-cpu for Graviton2+) otherwise never runs on
an x86_64 machine.  With ``qemu-user-static`` registered in binfmt_misc, the
kernel hands every aarch64 ELF to ``qemu-aarch64``, so ``chroot ROOT cmd``
runs a real arm64 Debian userland: its GCC, its Python, pip wheels for
aarch64.  Two things differ from real hardware, both measured:

* /proc/cpuinfo inside the root is the **x86 host's** file (qemu-user 7.2
  does not fake it for aarch64); the emulated CPU's features are only in the
  ELF auxiliary vector (AT_HWCAP/AT_HWCAP2), chosen by ``QEMU_CPU``
  (``neoverse-n1`` ~ Graviton2, no BF16/I8MM/SVE; the default ``max`` has all).
* nothing is fast: everything is an interpreted instruction stream.

Layers, cached under ``~/.cache/vllm-cpu-buildbot/aarch64-root/``:

1. ``bookworm-arm64-<hash of the package list>.tar`` made by ``mmdebstrap
   --arch=arm64`` (Debian's default mirror, apt access only);
2. ``venv-<hash of base + requirements>.tar``: the toolchain's venv that the
   master's own ``bootstrap.py`` created inside the root on first use.

Needs root (chroot, mount), ``qemu-user-static``, ``mmdebstrap`` and
``arch-test`` (Makefile APT_PACKAGES).  ``unavailable()`` says why not, for a
skip, instead of failing on a machine that cannot do it.

    python -m testbed.aarch64_host [--shell]   # build/refresh the cache, time it
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from testbed.debroot import MMDEBSTRAP_TIMEOUT, mmdebstrap_tarball

SUITE = "bookworm"
# What a provisioned ARM worker has (workers/provision.sh) plus sudo for it.
# No Debian cmake: bookworm's 3.25 is older than the 3.26 upstream needs, the
# toolchain venv brings cmake from PyPI (aarch64 wheels exist).
PACKAGES: tuple[str, ...] = ("python3", "python3-venv", "python3-dev", "gcc", "g++", "make", "git",
                             "ca-certificates", "sudo")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vllm-cpu-buildbot" / "aarch64-root"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = BINFMT / "qemu-aarch64"
# Inside the root.
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA = "/etc/ssl/certs/host-ca.crt"  # the host's CA bundle (pip may sit behind a TLS proxy)
VENV_PARENT = "root/.cache/vllm-cpu-buildbot"  # where bootstrap.py puts its venv-<key> (HOME=/root)
# Upper bounds of each stage on a cold cache and a busy 2-core machine (everything
# in the root is emulated).  Measured: mmdebstrap 726 s once under load (testbed/debroot.py);
# the toolchain venv (pip, cmake and friends under qemu) several minutes.
BOOTSTRAP_TIMEOUT = 1800
COMMAND_TIMEOUT = 1200  # one toolchain command in the root (a build is the longest)
# What the first test using a fresh root may spend in its setup: base + venv + extraction.
COLD_SETUP_TIMEOUT = MMDEBSTRAP_TIMEOUT + BOOTSTRAP_TIMEOUT + 300
# pytest timeout of a test using the root (cold, busy): every stage above.
ARM_ROOT_TIMEOUT = COLD_SETUP_TIMEOUT + COMMAND_TIMEOUT


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def base_key() -> str:
    return _key(SUITE, "arm64", *PACKAGES)


def _say(msg: str) -> None:
    print(f"[aarch64-host] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- can it run?


def _binfmt_enabled() -> bool:
    try:
        return BINFMT_ENTRY.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def unavailable() -> str | None:
    """Why no aarch64 root can run here (None = it can); registers binfmt if it may."""
    if sys.platform != "linux":
        return "needs Linux binfmt_misc"
    if os.geteuid() != 0:
        return "needs root (chroot, mount, binfmt_misc)"
    if not (shutil.which("qemu-aarch64-static") or Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists()):
        return "qemu-user-static is not installed (apt-get install qemu-user-static)"
    if not (BINFMT / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return f"cannot mount binfmt_misc: {r.stderr.strip()}"
    if not _binfmt_enabled() and shutil.which("update-binfmts"):
        # Debian's binfmt-support format file from qemu-user-static (flags F: the
        # interpreter is opened now, so it works inside any chroot).
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, check=False)
    if not _binfmt_enabled():
        return (f"no enabled {BINFMT_ENTRY} (qemu-user-static registers it via binfmt-support; "
                "a container may forbid binfmt_misc)")
    if "F" not in BINFMT_ENTRY.read_text().partition("flags:")[2].split("\n")[0]:
        return f"{BINFMT_ENTRY} lacks flag F: its interpreter would not be found inside a chroot"
    return None


# --------------------------------------------------------------- the cache


def base_tarball(log=_say) -> Path:
    """The cached arm64 Debian root (created with mmdebstrap on first use)."""
    for tool in ("mmdebstrap", "arch-test"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed (apt-get install {tool})")
    # No mirror given: mmdebstrap uses Debian's default one plus updates and security.
    return mmdebstrap_tarball(CACHE / f"{SUITE}-arm64-{base_key()}.tar",
                              ["--arch=arm64", "--variant=apt", f"--include={','.join(PACKAGES)}"], SUITE, log=log)


def venv_tarball(requirements: str) -> Path:
    """Where the toolchain venv layer for ``requirements`` is (or will be) cached."""
    return CACHE / f"venv-{_key(base_key(), requirements)}.tar"


# --------------------------------------------------------------- the root


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            out.append(target)
    return out


class EmulatedRoot:
    """A throw-away copy of the cached root, with /proc and /dev mounted.

    Use as a context manager; ``run()`` executes a command inside it.  On exit
    every mount is undone before the tree is deleted (a still-bound /dev must
    never be deleted through the root).
    """

    def __init__(self, parent: Path | None = None, log=_say) -> None:
        self.log = log
        self.dir = Path(tempfile.mkdtemp(prefix="aarch64-root-", dir=parent))
        self.path = self.dir / "root"
        self.timings: dict[str, float] = {}

    # -- life cycle
    def __enter__(self) -> EmulatedRoot:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        start = time.monotonic()
        base = base_tarball(self.log)
        self.timings["base_ready"] = time.monotonic() - start
        t = time.monotonic()
        self.path.mkdir()
        subprocess.run(["tar", "-xf", str(base), "-C", str(self.path)], check=True)
        self.timings["extract"] = time.monotonic() - t
        for f in ("/etc/resolv.conf", "/etc/hosts"):  # same network namespace as the host
            shutil.copy(f, self.path / f.lstrip("/"))
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if ca.is_file():
            shutil.copy(ca, self.path / HOST_CA.lstrip("/"))
        self._mount(["-t", "proc", "proc"], self.path / "proc")
        self._mount(["--bind", "/dev"], self.path / "dev")
        # smoke's floor CPU runs under qemu-aarch64: the host's static (x86_64) binary runs
        # natively inside the root, as fast as the root's own emulation (and provision.sh
        # then installs no emulated QEMU).
        qemu = shutil.which("qemu-aarch64-static")
        if qemu:
            shutil.copy(qemu, self.path / "usr/local/bin/qemu-aarch64-static")

    def _mount(self, args: list[str], target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)

    def bind_file(self, source: Path, inside: str) -> None:
        """Bind-mount the host file ``source`` over ``inside`` (e.g. a fake /proc/cpuinfo)."""
        self._mount(["--bind", str(source)], self.path / inside.lstrip("/"))

    def bind_dir(self, source: Path, inside: str | None = None) -> None:
        """Bind-mount the host directory ``source`` at ``inside`` (default: the same path) in the root."""
        target = self.path / (inside or str(source)).lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        self._mount(["--bind", str(source)], target)

    def unbind(self, inside: str) -> None:
        subprocess.run(["umount", str(self.path / inside.lstrip("/"))], check=True, capture_output=True)

    def close(self) -> None:
        for target in sorted(_mounts_under(self.path), key=len, reverse=True):
            if subprocess.run(["umount", target], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        left = _mounts_under(self.path)
        if left:  # never rm -rf through a mounted /dev
            raise RuntimeError(f"still mounted, not deleting {self.dir}: {left}")
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- running things
    def host_path(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def run(self, cmd: Sequence[str] | str, *, env: dict[str, str] | None = None, cwd: str = "/",
            qemu_cpu: str | None = None, timeout: float = COMMAND_TIMEOUT, check: bool = False,
            capture: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` (argv, or a shell string) in the root with a clean environment.

        ``qemu_cpu`` picks the emulated CPU model (QEMU_CPU, read by every
        qemu-aarch64 the kernel starts, so children inherit it through env).
        """
        full = self.argv(cmd, env=env, cwd=cwd, qemu_cpu=qemu_cpu)
        outer = {"PATH": os.environ.get("PATH", ROOT_PATH)}
        if qemu_cpu:
            outer["QEMU_CPU"] = qemu_cpu  # for /usr/bin/env itself
        return subprocess.run(full, env=outer, capture_output=capture, text=True, timeout=timeout,
                              check=check)

    def argv(self, cmd: Sequence[str] | str, *, env: dict[str, str] | None = None, cwd: str = "/",
             qemu_cpu: str | None = None) -> list[str]:
        """The host argv that ``run`` uses: ``cmd`` in the root with a clean environment (a process
        another program may start, e.g. the master's on-demand worker)."""
        inner = {"PATH": ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PIP_CERT": HOST_CA,
                 "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "180"}
        if qemu_cpu:
            inner["QEMU_CPU"] = qemu_cpu
        inner.update(env or {})
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return [shutil.which("chroot") or "chroot", str(self.path), "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in inner.items()), "/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]

    # -- the toolchain as the master ships it
    def install_toolchain(self, tarball: Path, dest: str = "/work/tc") -> str:
        """Unpack the master's toolchain tarball at ``dest`` and run its bootstrap.

        Returns the interpreter bootstrap.py chose (its cached venv).  The venv
        is saved as a cache layer the first time and restored afterwards.
        """
        target = self.host_path(dest)
        target.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(target, filter="data")
        reqs = (target / "requirements.txt").read_text()
        layer = venv_tarball(reqs)
        venv_parent = self.path / VENV_PARENT
        venv_parent.mkdir(parents=True, exist_ok=True)
        if layer.is_file():
            t = time.monotonic()
            subprocess.run(["tar", "-xf", str(layer), "-C", str(venv_parent)], check=True)
            self.timings["venv_restore"] = time.monotonic() - t
        t = time.monotonic()
        r = self.run(["python3", f"{dest}/vllm_cpu_build/bootstrap.py"], timeout=BOOTSTRAP_TIMEOUT)
        self.timings["bootstrap"] = time.monotonic() - t
        if r.returncode != 0:
            raise RuntimeError(f"bootstrap.py failed in the aarch64 root (exit {r.returncode}):\n"
                               f"{r.stderr[-3000:]}")
        py = r.stdout.strip().splitlines()[-1]
        if not layer.is_file():
            venvs = [p.name for p in venv_parent.iterdir() if p.name.startswith("venv-")]
            part = layer.with_suffix(".tar.part")
            subprocess.run(["tar", "-cf", str(part), "-C", str(venv_parent), *venvs], check=True)
            part.rename(layer)
            self.log(f"cached the toolchain venv as {layer.name} ({layer.stat().st_size >> 20} MiB)")
        return py


def steps_argv(python: str, *args: str, tc: str = "/work/tc") -> list[str]:
    """argv running a toolchain subcommand the way a variant build does (PYTHONPATH=tc)."""
    return ["/usr/bin/env", f"PYTHONPATH={tc}", python, "-m", "vllm_cpu_build", *args]


def cpuinfo_text(features: Iterable[str], processors: int = 2) -> str:
    """An aarch64 /proc/cpuinfo as the kernel prints it, with these ``Features``."""
    feats = " ".join(features)
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 243.75\nFeatures\t: {feats}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\nCPU revision\t: 1\n\n"
                   for i in range(processors))


def main(argv: list[str] | None = None) -> int:

    from vllm_cpu_build.helptext import Parser, describe

    p = Parser(prog="python -m testbed.aarch64_host", description=describe(__doc__))
    p.add_argument("--shell", action="store_true", help="open a shell in a fresh copy of the root")
    args = p.parse_args(argv)
    why = unavailable()
    if why:
        print(f"unavailable: {why}", file=sys.stderr)
        return 2
    t = time.monotonic()
    with EmulatedRoot() as root:
        r = root.run(["uname", "-m"])
        print(f"uname -m in the root: {r.stdout.strip()}; ready in {time.monotonic() - t:.1f} s {root.timings}")
        if args.shell:
            subprocess.run(["chroot", str(root.path), "/bin/bash", "-l"], check=False)
    print(f"cache: {CACHE}: " + ", ".join(shlex.quote(f.name) for f in sorted(CACHE.glob("*.tar"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
