"""What the package index already has of this farm's output, through the simple API only.

Only this farm's files count (``farm.custody``): a wheel the index lists
whose name and sha256 the custody ``ledger`` does not hold is foreign,
never "already published"; the callers collect the foreign files seen.

Used by the release builder (drop builds already published) and the
periodic re-check (find every applicable build the index lacks).  Blocking
HTTP: call it from a thread (``deferToThread``), never on the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from farm.custody import Foreign, Ledger, split, trusted_lister
from vllm_cpu_build import published as index_view
from vllm_cpu_build.abi3 import wheel_targets
from vllm_cpu_build.index import IndexFile, list_index_files, wheel_covers

__all__ = ["Build", "IndexFile", "Lister", "MissingBuild", "build_key", "filter_published", "list_index_files",
           "missing_builds", "of_version", "on_index", "trusted", "wheel_covers"]

Build = dict[str, Any]  # a planned build: {"variant", "arch", "pythons", "abi3", ...} (``plan``'s JSON)
Lister = Callable[[str, str], list[IndexFile]]  # (simple URL, project) -> its files in the index


def build_key(variant: str, arch: str) -> str:
    """How ``only_builds``/``skip_builds`` properties name a variant × arch build."""
    return f"{variant}/{arch}"


@dataclass(frozen=True)
class MissingBuild:
    """A build of a release the index lacks: one wheel (abi3, ``python`` None) or one Python's (for a
    stable-ABI wheel from a floor on, the first Python it serves)."""

    version: str
    tag: str
    variant: str
    arch: str
    python: str | None = None

    @property
    def key(self) -> str:
        return build_key(self.variant, self.arch)

    def __str__(self) -> str:
        return f"{self.variant} {self.arch}" + (f" py{self.python}" if self.python else "")


def filter_published(builds: list[Build], simple_url: str, version: str, include_posts: bool = True,
                     lister: Lister = list_index_files, *, ledger: Ledger,
                     foreign: list[Foreign] | None = None) -> tuple[list[Build], list[str]]:
    """Split a plan's ``builds`` into what still has to be built and a log of what is published.

    Only this farm's files (``ledger``) count; the foreign ones seen are
    appended to ``foreign`` and named in the log.

    A build entry is ``{"variant","arch","pythons","abi3",...}``; an abi3 build
    is published when one abi3 wheel for its arch exists, a per-Python build
    loses the Pythons already published (and disappears when none is left).
    """
    cache: dict[str, list[str]] = {}
    todo: list[Build] = []
    notes: list[str] = []
    seen: list[Foreign] = [] if foreign is None else foreign
    ours = trusted_lister(lister, ledger, seen)
    for b in builds:
        if b["variant"] not in cache:  # one listing per project
            before = len(seen)
            cache[b["variant"]] = [f.filename for f in ours(simple_url, b["variant"])]
            notes += [f"foreign, not counted as published: {f.file} (sha256 {f.sha256 or 'unknown'}): {f.why}"
                      for f in seen[before:] if of_version(f.file, version)]
        files = cache[b["variant"]]
        pythons = list(b.get("pythons") or [])
        if b.get("abi3") or not pythons:
            have = [f for f in files if wheel_covers(f, version, b["arch"], pythons[0] if pythons else None,
                                                      include_posts)]
            if have:
                notes.append(f"{b['variant']} {b['arch']}: already published ({have[0]})")
                continue
            todo.append(b)
            continue
        left = []
        for py in pythons:
            have = [f for f in files if wheel_covers(f, version, b["arch"], py, include_posts)]
            if have:
                notes.append(f"{b['variant']} {b['arch']} py{py}: already published ({have[0]})")
            else:
                left.append(py)
        if left:
            todo.append({**b, "pythons": left})
    return todo, notes


def of_version(filename: str, version: str) -> bool:
    """Whether the wheel ``filename`` is of ``version`` or a ``.postN`` of it (any arch)."""
    return any(wheel_covers(filename, version, arch) for arch in ("x86_64", "aarch64"))


def missing_builds(simple_url: str, releases: dict[str, str], applicable: Callable[[str], list[Build]],
                   plans: dict[str, list[Build]], lister: Lister = list_index_files, *,
                   ledger: Ledger) -> list[MissingBuild]:
    """Every (version, variant, arch, Python) of ``releases`` ({version: tag}) the index lacks.

    ``applicable(version)`` gives the variant × arch builds variants.json
    wants for a version (any wheel of the arch counts); a version's planned
    builds from an earlier release (``plans``) replace them where known, so
    a per-Python build is checked per Python.
    """
    files: dict[str, list[IndexFile]] = {}

    def cached(url: str, project: str) -> list[IndexFile]:
        if project not in files:
            files[project] = lister(url, project)
        return files[project]

    out: list[MissingBuild] = []
    for version, tag in releases.items():
        builds = {build_key(b["variant"], b["arch"]): b for b in applicable(version)}
        for b in plans.get(version, []):
            if build_key(b["variant"], b["arch"]) in builds:
                builds[build_key(b["variant"], b["arch"])] = b
        todo, _ = filter_published(list(builds.values()), simple_url, version, True, lister=cached, ledger=ledger)
        for b in todo:
            pythons = [] if b.get("abi3") else list(b.get("pythons") or [])
            if pythons and b.get("abi3_floor"):  # one per wheel: the stable-ABI one named by its first Python
                pythons = [t.python for t in wheel_targets(pythons, str(b["abi3_floor"]))]
            out += [MissingBuild(version, tag, b["variant"], b["arch"], py) for py in pythons] or [
                MissingBuild(version, tag, b["variant"], b["arch"])]
    return out


# package -> (the version chosen on the index, its wheels, whether it is the package's newest release)
OnIndex = dict[str, tuple[str, list[index_view.PublishedWheel], bool]]


def on_index(simple_url: str, packages: list[str], version: str, highest_post: bool = False,
             lister: Lister = list_index_files, ledger: Ledger | None = None,
             foreign: list[Foreign] | None = None) -> OnIndex:
    """What the index has of ``version`` per package (``highest_post``: its highest ``.postN``).

    With ``ledger``, only this farm's wheels count (``farm.custody``); the
    foreign files of ``version`` are appended to ``foreign``.  A package
    without a wheel of that version is absent: the GitHub release and the
    images are made only of what is there.  Blocking HTTP.
    """
    out: OnIndex = {}
    for pkg in packages:
        wheels = index_view.wheels(simple_url, pkg, lister)
        if ledger is not None:
            ours, other = split([w.file for w in wheels], ledger([w.filename for w in wheels]))
            keep = {f.filename for f in ours}
            wheels = [w for w in wheels if w.filename in keep]
            if foreign is not None:
                foreign += [f for f in other if of_version(f.file, version)]
        versions = {w.version for w in wheels}
        chosen = index_view.pick_version(versions, version, highest_post)
        if chosen:
            out[pkg] = (chosen, [w for w in wheels if w.version == chosen], index_view.is_newest(versions, chosen))
    return out


def trusted(simple_url: str, packages: list[str], version: str, highest_post: bool, ledger: Ledger,
            lister: Lister = list_index_files) -> OnIndex:
    """``on_index`` of this farm's wheels only: what the images and their form go by."""
    return on_index(simple_url, packages, version, highest_post, lister, ledger=ledger)
