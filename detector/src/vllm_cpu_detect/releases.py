"""Release ranges without third-party dependencies.

variants.json writes each package's releases as a specifier such as
``>=0.10.0,<0.17.0``. The detector must run with the standard library only,
so it evaluates those itself; ``detector/sync_data.py`` refuses any other
operator, so this small subset is exact (a test compares it with
``packaging`` over many versions).
"""

from __future__ import annotations

import re

Release = tuple[int, ...]

OPERATORS = (">=", "<")
# A PEP 440 version, optionally after a leading "v".  Release ranges compare
# the release part only, as the build side compares release lines too
# (0.17.0rc1 belongs to the 0.17.0 line); normalize_version keeps the rest.
_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre_l>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:(?:-(?P<post_n1>\d+))|(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d*)))?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d*))?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
    re.IGNORECASE,
)
_PRE = {"a": "a", "alpha": "a", "b": "b", "beta": "b", "c": "rc", "rc": "rc", "pre": "rc", "preview": "rc"}
# Upstream releases have three components: 0.12 is written 0.12.0 (as the build side does).
RELEASE_PARTS = 3


def parse_release(text: str) -> Release:
    """The release tuple of a version string; ValueError if it is not one."""
    m = _VERSION.match(text.strip())
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return _trim(tuple(int(p) for p in m.group("release").split(".")))


def normalize_version(text: str) -> str:
    """A version as the packages and image tags carry it: ``0.12`` -> ``0.12.0``, ``v0.13-rc1`` -> ``0.13.0rc1``.

    PEP 440's normal form with at least three release components: the same
    text ``vllm_cpu_build.specs.normalize_version`` gives (a test compares
    them).  ValueError if ``text`` is not a version.
    """
    m = _VERSION.match(text.strip())
    if not m:
        raise ValueError(f"not a version: {text!r} (e.g. 0.11.2)")
    parts = [int(p) for p in m.group("release").split(".")]
    out = ".".join(str(p) for p in parts + [0] * (RELEASE_PARTS - len(parts)))
    if m.group("pre_l"):
        out += _PRE[m.group("pre_l").lower()] + str(int(m.group("pre_n") or 0))
    if m.group("post_n1"):
        out += f".post{int(m.group('post_n1'))}"
    elif m.group("post_l"):
        out += f".post{int(m.group('post_n2') or 0)}"
    if m.group("dev_l"):
        out += f".dev{int(m.group('dev_n') or 0)}"
    if m.group("local"):
        out += "+" + re.sub(r"[-_]", ".", m.group("local").lower())
    return out


def _trim(rel: Release) -> Release:
    # 0.17 and 0.17.0 are the same release.
    while len(rel) > 1 and rel[-1] == 0:
        rel = rel[:-1]
    return rel


def format_release(rel: Release) -> str:
    return ".".join(str(p) for p in (rel + (0, 0))[: max(3, len(rel))])


def parse_specifier(spec: str) -> list[tuple[str, Release]]:
    """``">=0.10.0,<0.17.0"`` -> ``[(">=", (0, 10)), ("<", (0, 17))]``."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        op = next((o for o in OPERATORS if part.startswith(o) and not part.startswith(o + "=")), None)
        if op is None:
            raise ValueError(f"unsupported specifier {part!r} (only {' and '.join(OPERATORS)} are used)")
        bound = part[len(op):].strip()
        if not re.fullmatch(r"\d+(?:\.\d+)*", bound):
            raise ValueError(f"specifier {part!r}: bound must be a plain release like 0.17.0")
        out.append((op, parse_release(bound)))
    return out


def contains(spec: str, release: Release | None) -> bool:
    """Whether ``release`` lies in ``spec``; ``None`` means the newest release line."""
    for op, bound in parse_specifier(spec):
        if release is None:
            if op == "<":  # an upper bound: the newest releases are past it
                return False
            continue
        if op == ">=" and not release >= bound or op == "<" and not release < bound:
            return False
    return True


def boundaries(specs: list[str]) -> list[Release]:
    """Every bound mentioned, sorted: the answer is constant between two."""
    return sorted({b for s in specs for _, b in parse_specifier(s)})
