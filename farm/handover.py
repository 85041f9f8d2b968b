"""Build and publish apart: what the master needs to take a build's wheels into its custody.

A build worker runs upstream's code, so it never holds a publishing
credential.  After ``build``, ``verify`` and ``smoke`` on the worker, the
wheels travel to the master (Buildbot's own file transfer) into a
per-build custody directory under the master's basedir
(``custody/<builder>/<buildnumber>/``: directories 0700, files 0600), with
the sha256 each ``build`` recorded.  The master then runs ``vllm-cpu-build
upload`` from its own toolchain (the copy the master process imports,
never the tarball shipped to workers) on exactly those files: the received
bytes must hash to what the build recorded, ``verify`` runs again, and
the hash is pinned from verify to twine.  The index token is set only in
that master-side process's environment.

Plain Python: names, paths, the command line; the Buildbot steps are
``steps.publisher``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

import vllm_cpu_build

CUSTODY_DIR = "custody"  # under the master's basedir
MAX_WHEEL_BYTES = 4 * 1024 ** 3  # a worker cannot fill the master's disk with one "wheel"
# The toolchain the master process itself runs: the package directory's parent goes first on sys.path.
MASTER_TOOLCHAIN = Path(vllm_cpu_build.__file__).resolve().parent.parent
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Handover:
    """The wheels a build hands to the publisher: worker path -> file name, and the recorded sha256."""

    sources: list[str]  # paths on the worker, as ``build`` reported them
    built: dict[str, str]  # file name -> sha256 the build recorded


def custody_dir(basedir: str | Path, builder: str, number: int) -> Path:
    """``<basedir>/custody/<builder>/<number>``; ValueError for a name that is not one path component."""
    if not _SAFE.fullmatch(builder) or builder in (".", ".."):
        raise ValueError(f"builder name {builder!r} cannot name a custody directory")
    return Path(basedir).resolve() / CUSTODY_DIR / builder / str(int(number))


def prepare(path: Path) -> Path:
    """An empty ``path`` (a leftover is removed), it and its custody parents 0700; returns it."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    base = path.parent.parent  # <basedir>/custody
    for p in (base, path.parent, path):
        os.chmod(p, 0o700)
    return path


def discard(path: Path) -> None:
    """Remove a build's custody directory (and its builder's, when that is empty now)."""
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def sweep(basedir: str | Path) -> list[str]:
    """Remove every custody directory under ``basedir``; returns the ``builder/number`` removed.

    Only for a master that is starting: no build of this process runs yet, so
    whatever is there was left by a build the last process stopped between
    fetching its wheels and publishing them (they are rebuilt, never published).
    """
    base = Path(basedir).resolve() / CUSTODY_DIR
    gone = sorted(f"{b.name}/{n.name}" for b in base.glob("*") if b.is_dir() for n in b.iterdir())
    shutil.rmtree(base, ignore_errors=True)
    return gone


def handover(package: str, wheels: object, built: object) -> tuple[Handover | None, str]:
    """What to fetch from the worker, or None and why not (the worker's report is not trusted as is).

    ``wheels`` is the build's list of wheel paths, ``built`` its {file name:
    sha256}; each file name must be a wheel of ``package`` and carry a recorded sha256.
    """
    if not isinstance(wheels, list) or not wheels:
        return None, "no wheels were built"
    if not isinstance(built, dict):
        built = {}
    sources: list[str] = []
    digests: dict[str, str] = {}
    for w in wheels:
        name = str(w).rsplit("/", 1)[-1]
        try:
            project = parse_wheel_filename(name)[0]
        except InvalidWheelFilename:
            return None, f"{name!r} is not a wheel file name"
        if canonicalize_name(project) != canonicalize_name(package) or not _SAFE.fullmatch(name):
            return None, f"{name} is not a wheel of {package}"
        if name in digests:
            return None, f"{name} was built twice"
        sha = built.get(name)
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            return None, f"{name}: its build recorded no sha256"
        sources.append(str(w))
        digests[name] = sha
    return Handover(sources, digests), ""


def publish_command(variant: str, repository_url: str, simple_url: str, built: dict[str, str],
                    files: list[Path], python: str = sys.executable) -> list[str]:
    """``vllm-cpu-build upload`` from the master's own toolchain, isolated (``-I``: no PYTHONPATH, no cwd)."""
    boot = (f"import sys; sys.path.insert(0, {str(MASTER_TOOLCHAIN)!r}); "
            "from vllm_cpu_build.cli import main; sys.exit(main(sys.argv[1:]))")
    args = [python, "-I", "-c", boot, "upload", "--variant", variant, "--repository-url", repository_url,
            "--simple-url", simple_url]
    for name, sha in sorted(built.items()):
        args += ["--built-sha256", f"{name}={sha}"]
    return [*args, "--json", *(str(f) for f in files)]
