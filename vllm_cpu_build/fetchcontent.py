"""CMake FetchContent sources for a build: local trees instead of downloads.

Upstream's CPU cmake fetches dependencies (oneDNN; Arm Compute Library on
aarch64) at configure time unless ``FETCHCONTENT_SOURCE_DIR_<NAME>`` points
at a local copy.  ``--fetch-source NAME=DIR`` names one; ``--fetch-mirror
DIR`` holds ``DIR/<name>/<GIT_TAG>`` for every dependency the release
declares, and then the build runs fully disconnected: a dependency missing
from the mirror fails the build instead of downloading it.
"""

from __future__ import annotations

import re
from pathlib import Path

from vllm_cpu_build.buildenv import CPU_CMAKE
from vllm_cpu_build.errors import UsageError

_DECLARE = re.compile(r"FetchContent_(?:Declare|Populate)\(\s*([A-Za-z0-9_.+-]+)\b(.*?)\)", re.S)
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def declarations(src: Path) -> dict[str, str]:
    """FetchContent dependencies the tree's CPU cmake declares: name -> pinned ref (GIT_TAG or URL file)."""
    out: dict[str, str] = {}
    cmake = src / CPU_CMAKE
    text = cmake.read_text() if cmake.is_file() else ""
    for name, body in _DECLARE.findall(text):
        tag = re.search(r"\bGIT_TAG\s+(\S+)", body)
        url = re.search(r"\bURL\s+(\S+)", body)
        if tag:
            out[name] = tag.group(1)
        elif url:
            out[name] = re.sub(r"\.(tar\.gz|tgz|zip|tar\.xz|tar\.bz2)$", "", url.group(1).rsplit("/", 1)[-1])
        else:
            out.setdefault(name, "")  # the SOURCE_DIR form of an upstream `if`: the name alone
    return out


def sources(src: Path, given: dict[str, Path], mirror: Path | None) -> tuple[dict[str, Path], list[str]]:
    """(name -> local source dir, notes): explicit ``--fetch-source`` first, then ``<mirror>/<name>/<ref>``."""
    chosen: dict[str, Path] = {}
    notes: list[str] = []
    for name, path in given.items():
        if not path.is_dir():
            raise UsageError(f"--fetch-source {name}={path}: not a directory")
        chosen[name] = path.resolve()
    if mirror is None:
        return chosen, notes
    if not mirror.is_dir():
        raise UsageError(f"--fetch-mirror {mirror}: not a directory")
    for name, ref in declarations(src).items():
        if name in chosen or any(n.upper() == name.upper() for n in chosen):
            continue
        cands = [mirror / name.lower() / ref, mirror / name / ref] if ref else []
        hit = next((c for c in cands if c.is_dir()), None)
        if hit:
            chosen[name] = hit.resolve()
        elif ref:
            notes.append(f"{name} {ref} is not in the mirror ({mirror / name.lower() / ref}); "
                         "a build that needs it fails instead of downloading it")
    return chosen, notes


def cmake_options(fetch: dict[str, Path], mirror: bool, extra: list[str]) -> list[str]:
    """CMAKE_ARGS words (upstream's setup.py splits CMAKE_ARGS on whitespace)."""
    args = [f"-DFETCHCONTENT_SOURCE_DIR_{name.upper()}={path}" for name, path in sorted(fetch.items())]
    if mirror:
        args.append("-DFETCHCONTENT_FULLY_DISCONNECTED=ON")
    args += extra
    bad = [a for a in args if not a or any(c.isspace() for c in a)]
    if bad:
        raise UsageError(f"CMake arguments cannot contain whitespace (upstream splits CMAKE_ARGS): {bad}")
    return args


def parse_source_option(values: list[str]) -> dict[str, Path]:
    """``--fetch-source NAME=DIR`` values."""
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not _NAME.match(name) or not path:
            raise UsageError(f"--fetch-source {v!r}: expected NAME=DIR (e.g. oneDNN=/srv/src/oneDNN-v3.10)")
        out[name] = Path(path).expanduser()
    return out
