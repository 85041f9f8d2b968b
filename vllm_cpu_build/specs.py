"""One parser per input format a person or a tag hands the build: the only copies.

* versions and ranges: ``0.11.2``, ``0.11.0-0.12.0``, ``0.10.0, 0.11.0-0.11.2``
* Python specs: ``auto``, ``3.11``, ``3.10,3.12``, ``3.10-3.13`` (commas or spaces)
* version postfix: ``.postN .devN aN bN rcN``, and release + postfix
* tag -> version: ``v0.11.2`` / ``refs/tags/v0.11.2`` through the tag pattern

Pure functions, no network, no Buildbot: the toolchain (``plan``, ``patch``)
and the master (force form, tag filter, re-check) import them from here, so
whatever the form accepts the toolchain accepts too.  Only ASCII digits
count: ``\\d`` would let ``٣.١١`` through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from vllm_cpu_build.enums import Arch

# CPython minors a Python spec may name; anything outside is a typo.
PYTHON_MINORS = range(8, 20)
# What ``auto`` may pick from: CPython releases that exist (requires-python trims it).
AUTO_MINORS = range(8, 16)
_PY = re.compile(r"3\.([0-9]{1,2})", re.ASCII)
_POSTFIX = re.compile(r"(?:\.post[0-9]+|\.dev[0-9]+|a[0-9]+|b[0-9]+|rc[0-9]+)", re.ASCII)
_VERSION_CHARS = re.compile(r"[0-9A-Za-z.+!_-]+", re.ASCII)
_SEP = re.compile(r"[,\s]+")


class SpecError(ValueError):
    """Bad input; the message says what is wrong and what is allowed."""


# --------------------------------------------------------------------------- versions


# Upstream releases have three components; a shorter one is padded (``0.12`` -> ``0.12.0``).
RELEASE_PARTS = 3


def _padded(v: Version) -> Version:
    """``v`` with at least ``RELEASE_PARTS`` release components; equal to ``v`` under PEP 440."""
    if len(v.release) >= RELEASE_PARTS:
        return v
    release = v.release + (0,) * (RELEASE_PARTS - len(v.release))
    text = (f"{v.epoch}!" if v.epoch else "") + ".".join(map(str, release))
    if v.pre is not None:
        text += f"{v.pre[0]}{v.pre[1]}"
    if v.post is not None:
        text += f".post{v.post}"
    if v.dev is not None:
        text += f".dev{v.dev}"
    if v.local is not None:
        text += f"+{v.local}"
    return Version(text)


def parse_version(text: str, what: str = "version") -> Version:
    """A PEP 440 version written in ASCII (``0.11.2``, ``0.13.0rc1``), normalised.

    Every CLI option, form field and tag that names a version goes through
    here, so ``0.12``, ``v0.12`` and ``0.12.0`` are one version everywhere:
    the release gets three components (``0.12`` -> ``0.12.0``, ``1`` ->
    ``1.0.0``) and PEP 440's normal form (``0.13.0-rc1`` -> ``0.13.0rc1``).
    """
    if not _VERSION_CHARS.fullmatch(text or ""):
        raise SpecError(f"{what} {text!r} is not a version (e.g. 0.11.2)")
    try:
        return _padded(Version(text))
    except InvalidVersion:
        raise SpecError(f"{what} {text!r} is not a version (e.g. 0.11.2)") from None


def normalize_version(text: str, what: str = "version") -> str:
    """``parse_version`` as text: ``0.12`` -> ``0.12.0``, ``v0.13.0-rc1`` -> ``0.13.0rc1``."""
    return str(parse_version(text, what))


def parse_version_spec(spec: str) -> list[tuple[Version, Version]]:
    """Syntax of ``"0.11.0-0.12.0, 0.13.0"``: one (first, last) pair per item (first == last for one)."""
    if not isinstance(spec, str):
        raise SpecError(f"expected text like 0.11.2 or 0.11.0-0.12.0, got {type(spec).__name__}")
    items = [i for i in _SEP.split(spec.strip()) if i]
    if not items:
        raise SpecError("no version given (examples: 0.11.2 | 0.11.0-0.12.0 | 0.10.0, 0.11.0-0.11.2)")
    out = []
    for item in items:
        if "-" in item:
            parts = item.split("-")
            if len(parts) != 2 or not all(parts):
                raise SpecError(f"malformed range {item!r}: write FIRST-LAST, e.g. 0.11.0-0.12.0")
            lo = parse_version(parts[0], f"range {item!r}: start")
            hi = parse_version(parts[1], f"range {item!r}: end")
            if lo > hi:
                raise SpecError(f"malformed range {item!r}: start is after end")
            out.append((lo, hi))
        else:
            v = parse_version(item)
            out.append((v, v))
    return out


def expand_versions(spec: str, available: Iterable[str]) -> list[str]:
    """Expand ``"0.11.0-0.12.0, 0.13.0"`` against the upstream versions in ``available``.

    ``A-B`` is inclusive and takes every available final release in between
    (pre-releases only when named as an end point).  Returns the versions
    sorted oldest first, each once.
    """
    known = {Version(v): v for v in available}
    chosen: set[Version] = set()
    for lo, hi in parse_version_spec(spec):
        if lo == hi:
            if lo not in known:
                newest = ", ".join(known[k] for k in sorted(known)[-5:]) or "none"
                raise SpecError(f"{lo} is not an upstream release (newest known: {newest})")
            chosen.add(lo)
            continue
        inside = [v for v in known if lo <= v <= hi and (not v.is_prerelease or v in (lo, hi))]
        if not inside:
            raise SpecError(f"range {lo}-{hi} contains no upstream release")
        chosen.update(inside)
    return [known[v] for v in sorted(chosen)]


# --------------------------------------------------------------------------- postfix


def normalize_postfix(postfix: str) -> str:
    """Validate a version postfix (``.postN .devN aN bN rcN``); '' stays ''.

    ``post1`` and ``dev2`` get their dot; the result appended to a release
    is a normalised PEP 440 version (``.post01`` -> ``.post1``).
    """
    if not isinstance(postfix, str):
        raise SpecError(f"expected text like .post1, got {type(postfix).__name__}")
    p = postfix.strip().lower()
    if not p:
        return ""
    if p.startswith(("post", "dev")):
        p = "." + p
    if p.startswith("-"):
        p = "." + p[1:]
    if not _POSTFIX.fullmatch(p):
        raise SpecError(f"{postfix!r} is not a version postfix; allowed: .postN .devN aN bN rcN")
    return str(Version("0.0.0" + p))[len("0.0.0"):]


def final_version(version: str, postfix: str = "") -> str:
    """The version the wheels carry: upstream release plus postfix, normalised; never a local version."""
    base = parse_version(str(version))
    if base.local:
        raise SpecError(f"{base}: local versions (+...) cannot be published")
    v = parse_version(f"{base}{normalize_postfix(postfix)}", "version + postfix")
    return str(v)


# --------------------------------------------------------------------------- Python versions


def parse_pythons(spec: str) -> list[str] | None:
    """``auto`` (or empty) -> None; else the sorted, de-duplicated ``3.X`` list.

    Accepts ``3.11``, ``3.10,3.12``, ``3.11 3.12`` and inclusive ranges
    ``3.10-3.13``, mixed: ``3.10-3.11,3.13``.
    """
    if not isinstance(spec, str):
        raise SpecError(f"expected text like auto or 3.10-3.13, got {type(spec).__name__}")
    s = spec.strip().lower()
    if s in ("", "auto"):
        return None
    minors: set[int] = set()
    for item in (i for i in _SEP.split(s) if i):
        parts = item.split("-")
        if len(parts) > 2:
            raise SpecError(f"malformed Python range {item!r}: write 3.10-3.13")
        nums = []
        for part in parts:
            m = _PY.fullmatch(part)
            if not m or int(m.group(1)) not in PYTHON_MINORS:
                raise SpecError(
                    f"{part!r} is not a CPython version 3.{PYTHON_MINORS.start}..3.{PYTHON_MINORS.stop - 1}"
                    " (write auto, 3.11, 3.10,3.12 or 3.10-3.13)")
            nums.append(int(m.group(1)))
        if len(nums) == 2 and nums[0] > nums[1]:
            raise SpecError(f"malformed Python range {item!r}: start is after end")
        minors.update(range(nums[0], nums[-1] + 1))
    return [f"3.{m}" for m in sorted(minors)]


def _minor_ok(spec: SpecifierSet, minor: str) -> bool:
    return any(spec.contains(f"{minor}.{p}", prereleases=True) for p in range(30))


def allowed_pythons(requires_python: str, minors: Iterable[int] = AUTO_MINORS) -> list[str]:
    """Every ``3.X`` of ``minors`` that ``requires-python`` admits."""
    spec = SpecifierSet(requires_python)
    return [f"3.{m}" for m in minors if _minor_ok(spec, f"3.{m}")]


def pythons_for(requires_python: str, requested: str = "auto", *, strict: bool = True) -> list[str]:
    """Pythons to build for: ``requested`` (a Python spec) within ``requires-python``.

    ``strict``: a requested Python outside requires-python is an error; else
    it is dropped.  An empty result is always an error.
    """
    wanted = parse_pythons(requested)
    allowed = allowed_pythons(requires_python, AUTO_MINORS if wanted is None else PYTHON_MINORS)
    if wanted is None:
        if not allowed:
            raise SpecError(f"requires-python {requires_python!r} admits no CPython 3.x")
        return allowed
    outside = [p for p in wanted if p not in allowed]
    if outside and strict:
        raise SpecError(f"Python {', '.join(outside)} not allowed by requires-python {requires_python!r} "
                        f"(allowed: {', '.join(allowed) or 'none'})")
    out = [p for p in wanted if p in allowed]
    if not out:
        raise SpecError(f"Python {requested!r}: none allowed by requires-python {requires_python!r}")
    return out


# --------------------------------------------------------------------------- architectures

# Every option or field naming an architecture takes these spellings (arm64 = aarch64).
ARCH_ALIASES = {"x86_64": Arch.X86_64, "aarch64": Arch.AARCH64, "arm64": Arch.AARCH64}


def parse_arch(text: str) -> Arch:
    """``x86_64``, ``aarch64`` or ``arm64`` -> the arch."""
    arch = ARCH_ALIASES.get(str(text).strip().lower()) if isinstance(text, str) else None
    if arch is None:
        raise SpecError(f"unknown arch {text!r}; use {', '.join(ARCH_ALIASES)}")
    return arch


def parse_arches(text: str) -> list[Arch]:
    """A comma-separated list of arches: canonical names, each once, in the order given."""
    out = [parse_arch(a) for a in str(text).split(",") if a.strip()]
    if not out:
        raise SpecError("empty list of arches")
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- tags


def tag_version(tag: str, pattern: re.Pattern[str]) -> Version | None:
    """The upstream version a tag (``v0.11.2`` or ``refs/tags/v0.11.2``) names, if it is a release tag."""
    name = str(tag or "").removeprefix("refs/tags/")
    m = pattern.fullmatch(name)
    if not m:
        return None
    try:
        return _padded(Version(m.group("version")))
    except (InvalidVersion, IndexError):
        return None


def release_version(tag: str, pattern: re.Pattern[str], prereleases: bool) -> str | None:
    """The version a tag releases, or None (not a release tag, or a pre-release not asked for)."""
    v = tag_version(tag, pattern)
    if v is None or (v.is_prerelease and not prereleases):
        return None
    return str(v)


def next_dev_version(version: str) -> str:
    """The development version after release ``version``: ``0.11.2`` -> ``0.11.3.dev0``.

    What setuptools_scm's default scheme calls a commit after that tag (less
    its commit count, which ``git ls-remote`` cannot know): the version a
    readiness build of a branch plans, patches and builds with.
    """
    v = parse_version(version)
    release = list(v.release[:RELEASE_PARTS])
    release[-1] += 1
    return f"{'.'.join(map(str, release))}.dev0"


def release_tags(tags: Iterable[str], pattern: re.Pattern[str], prereleases: bool = False) -> dict[str, str]:
    """Map version string -> tag name for every release tag (pre-releases only if asked), oldest first."""
    found: dict[Version, str] = {}
    for tag in tags:
        v = tag_version(tag, pattern)
        if v is None or (v.is_prerelease and not prereleases):
            continue
        found.setdefault(v, str(tag).removeprefix("refs/tags/"))
    return {str(v): found[v] for v in sorted(found)}
