"""Fetch and cache upstream vLLM source distributions.

``pip download vllm==X --no-binary :all:`` cannot be used: pip builds the
sdist's metadata, which needs torch.  So we read the package index's simple
JSON page for ``vllm`` (PEP 691), take the ``vllm-X.tar.gz`` file listed
there, check its sha256 against the page, and keep it in a cache shared by
every build on the host (``$VLLM_CPU_CACHE/sdists``, default
``~/.cache/vllm-cpu-buildbot/sdists``).

The index is the one pip is configured with (``PIP_INDEX_URL``, then
``pip config`` ``global.index-url``), defaulting to pip's own default, so a
worker behind a mirror uses its mirror and no host name lives in this code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import requests
from packaging.utils import InvalidSdistFilename, parse_sdist_filename
from packaging.version import Version

from vllm_cpu_build.index import IndexFile, IndexUnusable, download, list_index_files, sha256_of

PROJECT = "vllm"


class SdistError(RuntimeError):
    """The index has no such release or the download is corrupt."""


def cache_dir(kind: str = "sdists") -> Path:
    root = os.environ.get("VLLM_CPU_CACHE") or Path.home() / ".cache" / "vllm-cpu-buildbot"
    return Path(root) / kind


def index_url() -> str:
    """Simple-index base URL pip would use on this host."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            url = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            url = ""
    if not url:
        try:
            from pip._internal.models.index import PyPI
        except ImportError:
            raise SdistError("no package index configured: set PIP_INDEX_URL") from None
        url = PyPI.simple_url
    return url.rstrip("/") + "/"


def _files(project: str = PROJECT) -> tuple[str, list[IndexFile]]:
    url = index_url()
    try:
        return url, list_index_files(url, project)
    except requests.RequestException as exc:
        raise SdistError(f"{url}{project}/: {exc}") from None


def _sdists(files: list[IndexFile]) -> dict[Version, IndexFile]:
    out: dict[Version, IndexFile] = {}
    for f in files:
        if f.yanked:
            continue
        try:
            name, ver = parse_sdist_filename(f.filename)
        except InvalidSdistFilename:
            continue  # wheels and odd files
        if name == PROJECT and f.filename.endswith(".tar.gz"):
            out[ver] = f
    return out


def available_versions() -> list[Version]:
    """Every release (with an sdist) on the index, oldest first."""
    return sorted(_sdists(_files()[1]))


def newest_release() -> str:
    """Newest non-prerelease version of vLLM that has an sdist on the index."""
    finals = [v for v in available_versions() if not v.is_prerelease and not v.is_devrelease]
    if not finals:
        raise SdistError("no final release of vllm on the index")
    return str(finals[-1])


def fetch(version: str, *, quiet: bool = False) -> Path:
    """Path of the cached ``vllm-<version>.tar.gz``, downloading it if needed."""
    ver = Version(version)
    return _fetch(PROJECT, lambda files: _sdists(files).get(ver), f"{PROJECT}-{ver}.tar.gz", "sdists", quiet)


def fetch_file(project: str, filename: str, *, quiet: bool = False) -> Path:
    """Any file the index lists for ``project`` (e.g. a published wheel), cached
    under ``files/`` and checked against the index's sha256 like sdists."""
    return _fetch(project, lambda files: next((f for f in files if f.filename == filename), None), filename,
                  "files", quiet)


def _fetch(project: str, pick, filename: str, kind: str, quiet: bool) -> Path:
    """Download ``filename`` (chosen from the project's files by ``pick``) into the cache.

    A cached file is trusted only with its ``.sha256`` companion (written
    after a verified download), so a half-written file is never used.
    """
    dest = cache_dir(kind) / filename
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256_of(dest):
        return dest
    url, files = _files(project)
    entry = pick(files)
    if entry is None:
        raise SdistError(f"{url}{project}/: no file {filename}")
    if not entry.sha256:
        raise SdistError(f"{url}{project}/: {entry.filename} has no sha256 on the index")
    if dest.is_file() and sha256_of(dest) == entry.sha256:  # pre-seeded cache without stamp
        stamp.write_text(entry.sha256 + "\n")
        return dest
    if not quiet:
        print(f"downloading {entry.filename} ({entry.size or '?'} bytes)", file=sys.stderr)
    try:
        download(entry, dest)
    except (requests.RequestException, IndexUnusable) as exc:
        raise SdistError(str(exc)) from None
    stamp.write_text(entry.sha256 + "\n")
    return dest


def extract(version: str, dest: str | os.PathLike, members: Iterable[str] | None = None) -> Path:
    """Unpack the sdist of ``version`` into ``dest`` (the tree root, no ``vllm-X/`` prefix).

    ``members``: optional paths relative to the tree root; a path names a file
    or a whole directory (``cmake/``).  Returns ``dest``.
    """
    archive = fetch(version)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [m.strip("/") for m in members] if members is not None else None
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            parts = PurePosixPath(info.name).parts
            if len(parts) < 2:
                continue
            rel = PurePosixPath(*parts[1:])
            if ".." in rel.parts or rel.is_absolute():
                raise SdistError(f"{archive.name}: unsafe member path {info.name!r}")
            if wanted is not None and not any(
                str(rel) == w or str(rel).startswith(w + "/") for w in wanted
            ):
                continue
            if not (info.isfile() or info.isdir()):
                continue  # sdists need no links or devices
            target = out / rel
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(info)
            assert src is not None
            with src, target.open("wb") as fh:
                shutil.copyfileobj(src, fh)
            if info.mode & 0o111:
                target.chmod(0o755)
    return out
