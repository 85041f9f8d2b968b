"""What the package index holds of one package: versions, arches, the highest ``.postN``, the newest release.

Read through the index client (``vllm_cpu_build.index``: PEP 691 JSON or
HTML, retried).  ``image`` uses it to pick the version an image installs and whether
``<short>-latest`` moves; the master's GitHub release step to find a
version's wheels.  Blocking HTTP: the master calls it from a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from vllm_cpu_build.index import IndexFile, list_index_files

ARCHES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class PublishedWheel:
    file: IndexFile  # filename, url, sha256 as the index lists them
    version: str  # normalised PEP 440
    arches: tuple[str, ...]  # x86_64 / aarch64 from the platform tags

    @property
    def filename(self) -> str:
        return self.file.filename

    @property
    def url(self) -> str:
        return self.file.url.split("#", 1)[0]

    @property
    def sha256(self) -> str:
        return self.file.sha256 or ""


def _arches(platforms: Iterable[str]) -> tuple[str, ...]:
    platforms = list(platforms)
    return tuple(a for a in ARCHES if any(p == a or p.endswith("_" + a) for p in platforms))


def wheels(simple_url: str, package: str,
           lister: Callable[[str, str], list[IndexFile]] = list_index_files) -> list[PublishedWheel]:
    """Every wheel the index lists for ``package`` (other files are ignored)."""
    out = []
    for f in lister(simple_url, package):
        try:
            _, version, _, tags = parse_wheel_filename(f.filename)
        except InvalidWheelFilename:
            continue
        out.append(PublishedWheel(f, str(version), _arches(t.platform for t in tags)))
    return out


def _same_release(candidate: Version, base: Version) -> bool:
    """``candidate`` is ``base`` or a ``.postN`` of it (the same upstream code)."""
    if candidate == base:
        return True
    return (candidate.is_postrelease and base.post is None and candidate.dev is None
            and candidate.release == base.release and candidate.pre == base.pre)


def pick_version(versions: Iterable[str], version: str, highest_post: bool = False) -> str | None:
    """The published version to use for ``version``: itself, or with ``highest_post`` the highest
    ``.postN`` of it (``0.12.0`` -> ``0.12.0.post3`` when .post1-.post3 exist). None: nothing published."""
    base = Version(version)
    parsed = set()
    for v in versions:
        try:
            parsed.add(Version(v))
        except InvalidVersion:
            continue
    if not highest_post:
        return str(base) if base in parsed else None
    same = [v for v in parsed if _same_release(v, base)]
    return str(max(same)) if same else None


def is_newest(versions: Iterable[str], version: str) -> bool:
    """Whether ``version`` is a final release at least as new as every final release in ``versions``
    (what ``<short>-latest`` may point at; pre-releases and dev builds never are)."""
    v = Version(version)
    if v.is_prerelease or v.is_devrelease:
        return False
    finals = [Version(x) for x in versions if not (Version(x).is_prerelease or Version(x).is_devrelease)]
    return all(v >= f for f in finals)


def highest_postfix(version: str, chosen: str) -> str:
    """The postfix that turns upstream ``version`` into ``chosen`` ("" or ".post3")."""
    base, pick = Version(version), Version(chosen)
    return f".post{pick.post}" if pick.post is not None and base.post is None else ""
