"""Pure parsing of what a maintainer types: versions, postfixes, Pythons.

Nothing here touches the network or Buildbot, so the force form's rules
are unit-tested directly.  Upstream tags are passed in as plain names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.version import InvalidVersion, Version

# The form allows at most this span of CPython minors; anything wider is a typo.
PYTHON_MINORS = range(8, 20)
_POSTFIX = re.compile(r"^(?:\.post\d+|\.dev\d+|a\d+|b\d+|rc\d+)$")
_PY = re.compile(r"^3\.(\d+)$")


class InputError(ValueError):
    """Bad maintainer input; the message says what is wrong and what is allowed."""


def tag_version(tag: str, pattern: re.Pattern[str]) -> Version | None:
    """The upstream version a tag (``v0.11.2`` or ``refs/tags/v0.11.2``) names, if it is a release tag."""
    name = tag.removeprefix("refs/tags/")
    m = pattern.match(name)
    if not m:
        return None
    try:
        return Version(m.group("version"))
    except InvalidVersion:
        return None


def release_tags(tags: Iterable[str], pattern: re.Pattern[str], prereleases: bool = False) -> dict[str, str]:
    """Map version string -> tag name for every release tag (pre-releases only if asked), oldest first."""
    found: dict[Version, str] = {}
    for tag in tags:
        v = tag_version(tag, pattern)
        if v is None or (v.is_prerelease and not prereleases):
            continue
        found.setdefault(v, tag.removeprefix("refs/tags/"))
    return {str(v): found[v] for v in sorted(found)}


def _version(text: str, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise InputError(f"{what} {text!r} is not a version (e.g. 0.11.2)") from None


def parse_version_spec(spec: str) -> list[tuple[Version, Version]]:
    """Syntax of ``"0.11.0-0.12.0, 0.13.0"``: one (first, last) pair per item (first == last for one)."""
    items = [i for i in re.split(r"[,\s]+", spec.strip()) if i]
    if not items:
        raise InputError("no version given (examples: 0.11.2 | 0.11.0-0.12.0 | 0.10.0, 0.11.0-0.11.2)")
    out = []
    for item in items:
        if "-" in item:
            parts = item.split("-")
            if len(parts) != 2 or not all(parts):
                raise InputError(f"malformed range {item!r}: write FIRST-LAST, e.g. 0.11.0-0.12.0")
            lo, hi = _version(parts[0], f"range {item!r}: start"), _version(parts[1], f"range {item!r}: end")
            if lo > hi:
                raise InputError(f"malformed range {item!r}: start is after end")
            out.append((lo, hi))
        else:
            v = _version(item, "version")
            out.append((v, v))
    return out


def expand_versions(spec: str, available: Iterable[str]) -> list[str]:
    """Expand ``"0.11.0-0.12.0, 0.13.0"`` against the upstream versions in ``available``.

    Items are separated by commas or spaces; ``A-B`` is inclusive and takes
    every available final release in between (pre-releases only when named
    as an end point).  Returns the versions sorted oldest first.
    """
    known = {Version(v): v for v in available}
    chosen: set[Version] = set()
    for lo, hi in parse_version_spec(spec):
        if lo == hi:
            if lo not in known:
                newest = ", ".join(known[k] for k in sorted(known)[-5:]) or "none"
                raise InputError(f"{lo} is not an upstream release (newest known: {newest})")
            chosen.add(lo)
            continue
        inside = [v for v in known if lo <= v <= hi and (not v.is_prerelease or v in (lo, hi))]
        if not inside:
            raise InputError(f"range {lo}-{hi} contains no upstream release")
        chosen.update(inside)
    return [known[v] for v in sorted(chosen)]


def normalize_postfix(postfix: str) -> str:
    """Validate a version postfix (``.postN .devN aN bN rcN``); '' stays ''.

    ``post1`` and ``dev2`` get their dot; the result appended to a release
    is a normalised PEP 440 version.
    """
    p = postfix.strip().lower()
    if not p:
        return ""
    if p.startswith(("post", "dev")):
        p = "." + p
    if p.startswith("-"):
        p = "." + p[1:]
    if not _POSTFIX.match(p):
        raise InputError(f"{postfix!r} is not a version postfix; allowed: .postN .devN aN bN rcN")
    # Canonical form: 0.0.0.post01 -> .post1
    canon = str(Version("0.0.0" + p))[len("0.0.0"):]
    return canon


def final_version(version: str, postfix: str = "") -> str:
    """The version the wheels carry: upstream release plus postfix, normalised."""
    v = _version(version + normalize_postfix(postfix), "version")
    if v.local:
        raise InputError(f"{v}: local versions (+...) cannot be published")
    return str(v)


def parse_pythons(spec: str) -> list[str] | None:
    """``auto`` -> None (the plan derives them from requires-python); else a sorted list of ``3.X``.

    Accepts ``3.11``, ``3.10,3.12`` and inclusive ranges ``3.10-3.13``.
    """
    s = spec.strip().lower()
    if s in ("", "auto"):
        return None
    minors: set[int] = set()
    for item in (i for i in re.split(r"[,\s]+", s) if i):
        parts = item.split("-")
        if len(parts) > 2:
            raise InputError(f"malformed Python range {item!r}: write 3.10-3.13")
        nums = []
        for part in parts:
            m = _PY.match(part)
            if not m or int(m.group(1)) not in PYTHON_MINORS:
                raise InputError(
                    f"{part!r} is not a CPython version 3.{PYTHON_MINORS.start}..3.{PYTHON_MINORS.stop - 1}"
                    " (write auto, 3.11, 3.10,3.12 or 3.10-3.13)"
                )
            nums.append(int(m.group(1)))
        if len(nums) == 2 and nums[0] > nums[1]:
            raise InputError(f"malformed Python range {item!r}: start is after end")
        minors.update(range(nums[0], nums[-1] + 1))
    return [f"3.{m}" for m in sorted(minors)]
