"""``[build] reproduce = true``: one ``reproduce-<arch>`` builder per arch, and worker slots for it.

Each variant build triggers its arch's reproduce builder and waits for it
(``steps/reproduce.py``).  So that this never deadlocks, a worker takes one
more build than its registry ``max_builds`` while reproduce is on, and every
builder that runs on registry workers except the reproduce ones takes a
counting ``WorkerLock`` of ``max_builds`` slots: a worker runs at most
``max_builds`` of those, and always has a slot for a rebuild (a reproduce
build waits for nothing, so a busy slot frees itself).  ``next_worker``
prefers a worker other than the one that built the first wheel, the least
busy first; with no other worker connected the same worker rebuilds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buildbot.plugins import schedulers, util

from farm.names import reproduce_builder, reproduce_trigger
from farm.settings import Settings
from master import factories
from workers import registry

SLOTS = "variant-build-slots"  # the WorkerLock every non-reproduce build on a registry worker holds


def max_builds(entry: registry.WorkerEntry, reproduce: bool) -> int:
    """A worker's Buildbot ``max_builds``: its registry's, plus the rebuild slot when reproduce is on."""
    return entry.max_builds + 1 if reproduce else entry.max_builds


def slot_locks(settings: Settings, entries: list[registry.WorkerEntry]) -> list[Any]:
    """``locks=`` of the builders that build on registry workers; [] while reproduce is off."""
    if not settings.build.reproduce:
        return []
    lock = util.WorkerLock(SLOTS, maxCount=1, maxCountForWorker={e.name: e.max_builds for e in entries})
    return [lock.access("counting")]


def _busy(wfb: Any) -> int:
    return sum(1 for other in wfb.worker.workerforbuilders.values() if other.isBusy())


def next_worker(builder: Any, workers: list[Any], request: Any) -> Any:
    """Another worker than the first build's (``reproduce_of.worker``), the least busy; else that one."""
    if not workers:
        return None
    of = request.properties.getProperty("reproduce_of") if request is not None else None
    first = of.get("worker") if isinstance(of, dict) else None
    return min(workers, key=lambda w: (w.worker.workername == first, _busy(w), w.worker.workername))


def make_builders(settings: Settings, arches: list[str], workers_by_arch: dict[str, list[str]],
                  tarball: Path) -> list[util.BuilderConfig]:
    if not settings.build.reproduce:
        return []
    return [util.BuilderConfig(
        name=reproduce_builder(arch), workernames=workers_by_arch.get(arch, []), collapseRequests=False,
        tags=["reproduce", arch], nextWorker=next_worker,
        factory=factories.reproduce_factory(settings, tarball, arch),
        description=f"rebuilds a {arch} variant build's wheels (fresh directory, no ccache, another worker "
                    "when one is free); the master compares them with the first build's before upload",
    ) for arch in arches if workers_by_arch.get(arch)]


def make_schedulers(settings: Settings, arches: list[str]) -> list[Any]:
    if not settings.build.reproduce:
        return []
    return [schedulers.Triggerable(name=reproduce_trigger(a), builderNames=[reproduce_builder(a)]) for a in arches]
