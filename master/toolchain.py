"""Ship the worker-side toolchain of the master's own revision with every build.

At (re)config the master packs ``vllm_cpu_build/``, ``variants.json``,
``readmes/`` and the worker's ``requirements.txt`` (read by
``vllm_cpu_build/bootstrap.py``) into ``<basedir>/toolchain/toolchain-<hash>.tar.gz``;
each build downloads it (FileDownload) and runs ``python -m vllm_cpu_build`` from
the unpacked copy, so a worker never needs this repository installed and
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
# The worker needs the project's runtime dependencies minus the master's own.
_MASTER_ONLY = ("buildbot", "twisted", "psycopg", "sqlalchemy", "argon2", "pygithub")  # the master's, never a worker's
# pip name -> import name where they differ
_IMPORT_NAMES = {"pyelftools": "elftools", "iced-x86": "iced_x86", "setuptools-scm": "setuptools_scm"}


def requirements(root: Path = REPO_ROOT) -> list[tuple[str, str]]:
    """(requirement line, import name) for the worker, from pyproject.toml's dependencies."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    import re

    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        name = re.match(r"[A-Za-z0-9._-]+", dep).group(0).lower()
        if name.startswith(_MASTER_ONLY):
            continue
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
