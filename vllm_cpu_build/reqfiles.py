"""The one parser for upstream's requirement lists (pip requirement files, PEP 518 ``requires``).

Upstream names what a CPU build needs in ``pyproject.toml [build-system]
requires`` and ``requirements/cpu-build.txt``, and what the wheel will pin in
``requirements/cpu.txt`` (``-r common.txt`` included), with environment
markers per machine (``torch==2.8.0+cpu; platform_machine == "x86_64"``).
This module reads those files for one *target* (arch, Python), so a build on
any host resolves them as the target would: markers are evaluated for the
target, ``-r`` includes followed, index options (``--extra-index-url``) kept
apart (the torch index is the build's setting, not the file's).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_OPTION = re.compile(r"^(-r|--requirement|-c|--constraint|-i|--index-url|--extra-index-url|-f|--find-links)"
                     r"(?:\s+|=)(\S+)$")


class RequirementsError(ValueError):
    """A requirement file or line upstream wrote that pip would not accept either."""


@dataclass(frozen=True)
class Target:
    """The machine a wheel is built for: what markers are evaluated against."""

    arch: str  # x86_64 | aarch64
    python: str  # "3.11"

    def environment(self) -> dict[str, str]:
        return {"platform_machine": self.arch, "platform_system": "Linux", "sys_platform": "linux",
                "os_name": "posix", "python_version": self.python, "python_full_version": f"{self.python}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


@dataclass
class RequirementList:
    """Requirements that apply to the target, in file order, plus the index options seen."""

    requirements: list[Requirement] = field(default_factory=list)
    index_urls: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # files read, relative to the tree

    def get(self, name: str) -> Requirement | None:
        want = canonicalize_name(name)
        return next((r for r in self.requirements if canonicalize_name(r.name) == want), None)

    def names(self) -> set[str]:
        return {canonicalize_name(r.name) for r in self.requirements}


def parse_line(line: str, where: str, target: Target) -> Requirement | None:
    """One requirement line (comments stripped); None when its marker excludes the target."""
    try:
        req = Requirement(line)
    except (InvalidRequirement, InvalidMarker) as exc:
        raise RequirementsError(f"{where}: {line!r} is not a requirement: {exc}") from None
    if req.marker is not None and not req.marker.evaluate(target.environment()):
        return None
    req.marker = None  # evaluated: what is left applies to the target
    return req


def read_file(path: Path, target: Target, root: Path | None = None, _seen: set[Path] | None = None) -> RequirementList:
    """A pip requirements file with its ``-r`` includes, for ``target``."""
    root = root or path.parent
    seen = _seen if _seen is not None else set()
    out = RequirementList()
    path = path.resolve()
    if path in seen:
        return out
    seen.add(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RequirementsError(f"{path}: no such requirements file") from None
    out.sources.append(str(path.relative_to(root.resolve())) if path.is_relative_to(root.resolve()) else str(path))
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        where = f"{out.sources[0]}:{lineno}"
        opt = _OPTION.match(line)
        if opt:
            flag, value = opt.groups()
            if flag in ("-r", "--requirement"):
                sub = read_file(path.parent / value, target, root, seen)
                out.requirements += sub.requirements
                out.index_urls += sub.index_urls
                out.sources += sub.sources
            elif flag in ("-i", "--index-url", "--extra-index-url"):
                out.index_urls.append(value)
            continue  # constraints and find-links of upstream's CI are not the build's business
        if line.startswith("-"):
            raise RequirementsError(f"{where}: unsupported option {line!r}")
        req = parse_line(line, where, target)
        if req is not None:
            out.requirements.append(req)
    return out


def pyproject(src: Path) -> tuple[Path, dict[str, Any]]:
    """(path, contents) of the tree's pyproject.toml; RequirementsError when it is missing or not TOML."""
    path = src / "pyproject.toml"
    try:
        return path, tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RequirementsError(f"{src}: no pyproject.toml; not a vLLM source tree") from None
    except tomllib.TOMLDecodeError as exc:
        raise RequirementsError(f"{path}: not valid TOML: {exc}") from None


def build_system_requires(src: Path, target: Target) -> RequirementList:
    """``[build-system] requires`` of the tree's pyproject.toml, for ``target``."""
    path, data = pyproject(src)
    requires = data.get("build-system", {}).get("requires")
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise RequirementsError(f"{path}: [build-system] requires is not a list of requirements")
    out = RequirementList(sources=["pyproject.toml [build-system] requires"])
    for r in requires:
        req = parse_line(r, "pyproject.toml [build-system]", target)
        if req is not None:
            out.requirements.append(req)
    return out


def merge(*lists: RequirementList, drop: tuple[str, ...] = ()) -> list[Requirement]:
    """One requirement per project (specifiers intersected, extras united), first-seen order."""
    merged: dict[str, Requirement] = {}
    skip = {canonicalize_name(d) for d in drop}
    for lst in lists:
        for req in lst.requirements:
            key = canonicalize_name(req.name)
            if key in skip:
                continue
            if key not in merged:
                merged[key] = Requirement(str(req))
                continue
            have = merged[key]
            if req.url and have.url and req.url != have.url:
                raise RequirementsError(f"{req.name}: two different URLs ({have.url}, {req.url})")
            have.specifier &= req.specifier
            have.extras |= req.extras
            have.url = have.url or req.url
    return list(merged.values())
