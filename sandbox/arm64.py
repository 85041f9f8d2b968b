"""The emulated arm64 build host as a worker of the sandbox's own master.

The host is testbed/aarch64_host.py's Debian arm64 root under qemu-user.  It
is provisioned the documented way: the worker's password file copied over
(mode 0600, never an argument), then ``workers/provision.sh`` run inside it,
which checks the CPU, installs, starts ``buildbot-worker`` and waits until
the master has accepted it.  Two stand-ins for real Graviton2 hardware:

* ``QEMU_CPU=neoverse-n1`` for every process of the worker (the daemon and
  every build it runs inherit it): ARMv8.2 + dot product + FP16, no
  BF16/I8MM/SVE, so smoke runs the wheel on the CPU it is sold for;
* a Graviton2 ``/proc/cpuinfo`` bound over the root's (qemu-user shows the
  x86 host's file), which provision.sh's CPU check reads.
"""

from __future__ import annotations

import time
from pathlib import Path

from farm.settings import REPO_ROOT

GRAVITON2_CPU = "neoverse-n1"
GRAVITON2_CPUINFO = REPO_ROOT / "testbed" / "cpuinfo" / "graviton2_neoverse_n1.cpuinfo"
BASE = "/root/vllm-cpu-worker"


def provision(root, name: str, password: str, master_port: int, shared: tuple[Path, ...] = (),
              timeout: float = 2400, start: bool = True) -> float:
    """Run provision.sh in ``root`` (a testbed.aarch64_host.EmulatedRoot) for worker ``name``; seconds taken.

    ``shared``: host directories the worker needs at the same path (the sandbox's
    upstream repository, which builds clone by its host path).  ``start``: False
    installs the worker without starting it (START=0): the master starts it
    (``worker_command``) when a build needs it.
    """
    start = time.monotonic()
    for d in shared:
        root.bind_dir(d)
    (root.host_path("/tmp/provision.sh")).write_text((REPO_ROOT / "workers" / "provision.sh").read_text())
    pw = root.host_path("/root/.vllm-cpu-worker-password")
    pw.parent.mkdir(parents=True, exist_ok=True)
    pw.write_text(password)
    pw.chmod(0o600)
    root.bind_file(GRAVITON2_CPUINFO, "/proc/cpuinfo")
    r = root.run(["env", f"WORKER_NAME={name}", f"MASTER=127.0.0.1:{master_port}", "CONNECT_TIMEOUT=600",
                  f"START={int(start)}", "sh", "/tmp/provision.sh"], qemu_cpu=GRAVITON2_CPU, timeout=timeout)
    if r.returncode != 0:
        stop(root)
        raise RuntimeError(f"provision.sh failed in the arm64 root (exit {r.returncode}):\n"
                           f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return time.monotonic() - start


def worker_command(root) -> tuple[str, ...]:
    """The host argv running the provisioned worker in ``root`` in the foreground on the Graviton2 CPU
    (what provision.sh's start.sh runs, without daemonising): a ``[worker.local]`` command."""
    venv = f"{BASE}/venv/bin"
    return tuple(root.argv([f"{venv}/buildbot-worker", "start", "--nodaemon", f"{BASE}/worker"],
                           env={"PATH": f"{venv}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                           cwd=f"{BASE}/worker", qemu_cpu=GRAVITON2_CPU))


def stop(root, shared: tuple[Path, ...] = ()) -> None:
    """Stop the worker (if it runs), unbind the fake /proc/cpuinfo and the shared directories."""
    if root.host_path(f"{BASE}/worker/twistd.pid").exists():
        root.run([f"{BASE}/venv/bin/buildbot-worker", "stop", f"{BASE}/worker"], timeout=300)
    mounted = _mounts(root.path)
    for inside in ["/proc/cpuinfo", *map(str, shared)]:
        if str(root.host_path(inside)) in mounted:
            root.unbind(inside)


def _mounts(path: Path) -> list[str]:
    prefix = str(path.resolve())
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1] == prefix or line.split()[1].startswith(prefix + "/")]


def worker_log(root) -> str:
    p = root.host_path(f"{BASE}/worker/twistd.log")
    return p.read_text(errors="replace") if p.exists() else ""
