"""Ship the worker-side toolchain of the master's own revision with every build.

At (re)config the master packs ``vllm_cpu_build/``, ``variants.json``,
``readmes/`` and the worker's ``requirements.txt`` (read by
``vllm_cpu_build/bootstrap.py``) into ``<basedir>/toolchain/toolchain-<hash>.tar.gz``;
each build unpacks it (``steps/ship.py``: sent once per worker and hash) and runs
``python -m vllm_cpu_build`` from the unpacked copy, so a worker never needs this repository installed and
can never run a toolchain older or newer than the master's.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTS = ("vllm_cpu_build", "variants.json", "readmes")
WORKER_EXTRA = "worker"  # pyproject.toml's extra listing exactly what the toolchain imports or runs
# pip name -> import name where they differ
_IMPORT_NAMES = {"pyelftools": "elftools", "iced-x86": "iced_x86", "setuptools-scm": "setuptools_scm"}


def requirements(root: Path = REPO_ROOT) -> list[tuple[str, str]]:
    """(requirement line, import name) for the worker: pyproject.toml's ``[worker]`` extra, nothing else.

    A worker never installs this project (its master, steps, Buildbot): the
    tarball carries the toolchain's code and this list only.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    import re

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    out = []
    for dep in project["optional-dependencies"][WORKER_EXTRA]:
        match = re.match(r"[A-Za-z0-9._-]+", dep)
        if match is None or match.group(0).lower().replace("_", "-") == project["name"]:
            raise ValueError(f"pyproject.toml [{WORKER_EXTRA}]: {dep!r} is not a third-party requirement")
        name = match.group(0).lower()
        out.append((dep, _IMPORT_NAMES.get(name, name.replace("-", "_"))))
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def files(root: Path = REPO_ROOT) -> list[Path]:
    out: list[Path] = []
    for part in PARTS:
        p = root / part
        if p.is_file():
            out.append(p)
        else:
            out.extend(f for f in sorted(p.rglob("*")) if f.is_file() and "__pycache__" not in f.parts
                       and f.suffix != ".pyc")
    return out


def build_tarball(dest_dir: Path, root: Path = REPO_ROOT) -> Path:
    """Write the toolchain tarball (deterministic: sorted, mtime 0) and return its path."""
    buf = io.BytesIO()
    reqs = "".join(f"{dep}  # {mod}\n" for dep, mod in requirements(root)).encode()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files(root):
            _add_bytes(tar, str(f.relative_to(root)), f.read_bytes())
        _add_bytes(tar, "requirements.txt", reqs)
    data = gzip.compress(buf.getvalue(), mtime=0)
    digest = hashlib.sha256(data).hexdigest()[:12]
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"toolchain-{digest}.tar.gz"
    if not path.exists():
        path.write_bytes(data)
    return path
