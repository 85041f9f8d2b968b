"""What the package index already has, through the simple API only.

Used by the release builder (drop builds already published) and the
periodic re-check (find releases nothing was published for).  Blocking
HTTP: call it from a thread (``deferToThread``), never on the reactor.
"""

from __future__ import annotations

from vllm_cpu_build.index import IndexFile, list_index_files, wheel_covers

__all__ = ["IndexFile", "filter_published", "list_index_files", "release_published", "wheel_covers"]


def filter_published(builds: list[dict], simple_url: str, version: str, include_posts: bool = True,
                     lister=list_index_files) -> tuple[list[dict], list[str]]:
    """Split a plan's ``builds`` into what still has to be built and a log of what is published.

    A build entry is ``{"variant","arch","pythons","abi3",...}``; an abi3 build
    is published when one abi3 wheel for its arch exists, a per-Python build
    loses the Pythons already published (and disappears when none is left).
    """
    cache: dict[str, list[str]] = {}
    todo: list[dict] = []
    notes: list[str] = []
    for b in builds:
        files = cache.setdefault(b["variant"], [f.filename for f in lister(simple_url, b["variant"])])
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


def release_published(simple_url: str, packages: list[str], version: str, lister=list_index_files) -> bool:
    """True when any of ``packages`` has any file for ``version`` (or a .postN of it)."""
    for pkg in packages:
        for f in lister(simple_url, pkg):
            if any(wheel_covers(f.filename, version, arch, None) for arch in ("x86_64", "aarch64")):
                return True
    return False
