"""Where a build's commands run: this host, or a *build root* that meets the policy.

A wheel's manylinux tag can only be as old as the glibc it was linked on, so
a worker whose own system is too new (Debian 12: glibc 2.36) builds inside a
root file system that is old enough and has a compiler the release accepts
(production: the manylinux_2_28 image with gcc-toolset-14, exported as a
tarball; see master/README.md).  ``--root`` names it: a directory, or a root
tarball (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``, ``.tar.zst``) unpacked
once into ``$VLLM_CPU_CACHE/roots/<name>-<sha256>`` (a changed tarball is a
new root).

Commands run in it with bubblewrap (``bwrap``), chosen after measuring on a
2-core Debian 12 host (20 runs of ``python3 -c pass`` in a bookworm root):
``bwrap`` ~40 ms, ``unshare -m`` + ``chroot`` ~35 ms, ``buildah run
--isolation chroot`` ~580 ms; ``podman run`` does not start at all (cgroups
v1/hybrid).  bwrap alone gives, in one command, without root when user
namespaces are allowed: the root read-only as ``/`` (a build cannot change
the shared root), a private ``/tmp``, ``/proc`` of its own PID namespace,
a minimal ``/dev``, and exactly the host paths the build needs bound
read-write at the **same absolute path**, so every path (source tree, wheel
directory, venv, ccache) means the same inside and outside.  Nothing is
left mounted when it exits (``--die-with-parent``).  The network is the
host's (pip must reach the indexes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TextIO

from vllm_cpu_build.enums import RunnerKind
from vllm_cpu_build.files import sha256_of
from vllm_cpu_build.provenance import RunnerInfo

# PATH inside a root: manylinux images keep their toolsets and Pythons under /opt and /usr/local.
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host variables that may cross into a root: pip's and ccache's configuration, proxies, locale.
_PASS_ENV = ("PIP_", "CCACHE_", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
             "LANG", "LC_ALL", "SOURCE_DATE_EPOCH")
_CA_ENV = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_TARBALL = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tar.bz2")


class RootError(Exception):
    """The build root cannot be used (missing, not a root, bwrap absent)."""


class Runner:
    """Runs a build's commands on this host."""

    label = "this host"
    key = "host"

    def command(self, argv: list[str], cwd: str | None = None) -> list[str]:
        return list(argv)

    def environment(self, env: dict[str, str] | None) -> dict[str, str]:
        return dict(os.environ if env is None else env)

    def expose(self, path: Path, writable: bool = True) -> None:
        """Make ``path`` visible to later commands (nothing to do on the host)."""

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv, cwd), env=self.environment(env), cwd=None if self.in_root else cwd,
                              capture_output=True, text=True, errors="replace", check=False, timeout=timeout)

    def popen(self, argv: list[str], *, env: dict[str, str], cwd: str | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(argv, cwd), env=self.environment(env),
                                cwd=None if self.in_root else cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")

    @property
    def in_root(self) -> bool:
        return False

    def describe(self) -> RunnerInfo:
        return RunnerInfo(RunnerKind.HOST)


def _cache() -> Path:
    root = os.environ.get("VLLM_CPU_CACHE") or Path.home() / ".cache" / "vllm-cpu-buildbot"
    return Path(root) / "roots"


def unpack(tarball: Path, log: TextIO | None = None) -> tuple[Path, str]:
    """The cached unpacked copy of a root tarball: (directory, sha256)."""
    import fcntl

    digest = sha256_of(tarball)
    name = tarball.name
    for suffix in _TARBALL:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    dest = _cache() / f"{name}-{digest[:16]}"
    done = dest.with_name(dest.name + ".ok")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and dest.is_dir():
            return dest, digest
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        if log:
            log.write(f"  build root: unpacking {tarball} into {dest}\n")
        # GNU tar: keeps owners, modes and device nodes as root; reads every compression by suffix.
        r = subprocess.run(["tar", "--numeric-owner", "-xaf", str(tarball), "-C", str(dest)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            raise RootError(f"{tarball}: cannot unpack: {r.stderr.strip()[-500:]}")
        done.write_text(digest + "\n")
    return dest, digest


class BuildRoot(Runner):
    """Runs a build's commands inside a root file system with bubblewrap."""

    def __init__(self, spec: str | os.PathLike[str], log: TextIO | None = None) -> None:
        path = Path(spec).expanduser()
        if not path.exists():
            raise RootError(f"--root {spec}: no such directory or tarball")
        bwrap = shutil.which("bwrap")
        if not bwrap:
            raise RootError("--root needs bubblewrap (apt-get install bubblewrap; dnf install bubblewrap)")
        self.bwrap = bwrap
        self.spec = str(path)
        if path.is_file():
            if not path.name.endswith(_TARBALL):
                raise RootError(f"--root {spec}: not a directory or a tarball ({', '.join(_TARBALL)})")
            self.dir, digest = unpack(path.resolve(), log)
            self.key = f"root-{digest[:16]}"
            self.sha256: str | None = digest
        else:
            self.dir = path.resolve()
            self.key = "rootdir-" + hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
            self.sha256 = None
        if not (self.dir / "bin").exists() or not (self.dir / "etc").is_dir():
            raise RootError(f"--root {spec}: {self.dir} is not a root file system (no /bin, /etc)")
        self.label = f"build root {path.name}"
        self.rw: list[Path] = []
        self.ro: list[Path] = []
        self.os_release = self._os_release()
        self.expose(_cache() / "home")  # HOME inside: pip's and ccache's caches for this root
        # A CA bundle the worker's pip is told to trust (a TLS-inspecting proxy's) must be trusted inside too.
        for var in _CA_ENV:
            ca = os.environ.get(var)
            if ca and Path(ca).is_file():
                self.expose(Path(ca), writable=False)

    def _os_release(self) -> str:
        for rel in ("etc/os-release", "usr/lib/os-release"):
            p = self.dir / rel
            if p.is_file():
                for line in p.read_text(errors="replace").splitlines():
                    if line.startswith("PRETTY_NAME="):
                        return line.partition("=")[2].strip().strip('"')
        return "unknown"

    @property
    def in_root(self) -> bool:
        return True

    def expose(self, path: Path, writable: bool = True) -> None:
        path = Path(path).absolute()  # not resolved: a CA bundle is often a symlink the root has too
        if writable:
            path.mkdir(parents=True, exist_ok=True)
        target = self.rw if writable else self.ro
        if path not in target:
            target.append(path)

    def command(self, argv: list[str], cwd: str | None = None) -> list[str]:
        cmd = [self.bwrap, "--ro-bind", str(self.dir), "/", "--proc", "/proc", "--dev", "/dev",
               "--tmpfs", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "buildroot",
               "--die-with-parent"]
        for f in ("/etc/resolv.conf", "/etc/hosts"):  # same network as the host (a mount point must exist)
            if Path(f).is_file() and (self.dir / f.lstrip("/")).is_file():
                cmd += ["--ro-bind", f, f]
        for p in [*self.ro, *self.rw]:
            self._mount_point(p)
        for p in self.ro:
            cmd += ["--ro-bind", str(p), str(p)]
        for p in self.rw:
            cmd += ["--bind", str(p), str(p)]
        if cwd:
            cmd += ["--chdir", str(cwd)]
        return [*cmd, "--", *argv]

    def _mount_point(self, path: Path) -> None:
        """An empty directory (or file) at ``path`` in the root: bwrap cannot create one under a read-only /."""
        target = self.dir / path.relative_to("/")
        if target.exists() or target.is_symlink():
            return
        try:
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        except OSError as exc:
            raise RootError(f"cannot make the mount point {target} in the build root: {exc}") from None

    def environment(self, env: dict[str, str] | None) -> dict[str, str]:
        """The build's variables, the root's PATH; nothing else of the worker's environment."""
        src = dict(os.environ if env is None else env)
        out = {k: v for k, v in src.items() if k.startswith(_PASS_ENV) or k in _PASS_ENV}
        if env is not None:
            # What the build itself set (VLLM_*, CMAKE_*, MAX_JOBS ...) and the venv's bin first on PATH.
            out.update({k: v for k, v in env.items() if k not in os.environ or os.environ[k] != v})
        # PATH: entries inside what the root sees of the host (the build venv's bin), then the root's own.
        shared = [p for p in (env or {}).get("PATH", "").split(os.pathsep)
                  if p and any(Path(p).is_relative_to(d) for d in self.rw + self.ro)]
        out["PATH"] = os.pathsep.join([*shared, ROOT_PATH])
        out["HOME"] = str(_cache() / "home")
        out.setdefault("LANG", "C.UTF-8")
        return out

    def describe(self) -> RunnerInfo:
        return RunnerInfo(RunnerKind.ROOT, self.spec, str(self.dir), self.sha256, self.os_release, "bwrap")


def runner_for(root: str | None, log: TextIO | None = None) -> Runner:
    return BuildRoot(root, log) if root else Runner()
