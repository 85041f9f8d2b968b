"""Longest build first: how queued builds are packed onto the workers.

A release triggers its variant builds at once, and Buildbot starts them in
the order of its builders' names (the requests of one release share their
submission second); when the longest build happens to start last, the
release waits for it alone on one worker while the others idle.  Starting
the builds with the longest expected duration first (the classic LPT rule)
packs them tighter.  The expected duration of a builder's build is the
median wall time of its last successful builds in Buildbot's database, so
it follows whatever the builds really cost; a builder without history is
taken as long as the longest known one (unknown cost is not assumed cheap).

Two places use it: ``prioritize_builders`` (``c["prioritizeBuilders"]``,
Buildbot's hook for which builder gets a free worker next) and the
release's fan-out, which triggers its builds in the same order, since the
first ones it triggers take the free workers before any sorting happens.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from buildbot.data import resultspec
from buildbot.process.results import SUCCESS, WARNINGS
from twisted.internet import defer

HISTORY = 5  # builds per builder the estimate looks at


def _seconds(t: Any) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


async def expected_seconds(master: Any, builderid: int) -> float | None:
    """Median wall time of the builder's last successful builds; None without any."""
    builds = await master.data.get(
        ("builders", builderid, "builds"),
        filters=[resultspec.Filter("results", "in", [SUCCESS, WARNINGS])],
        order=["-buildid"], limit=HISTORY,
    )
    durations = [_seconds(b["complete_at"]) - _seconds(b["started_at"]) for b in builds
                 if b.get("complete_at") and b.get("started_at")]
    return statistics.median(durations) if durations else None


def costs(expected: dict[str, float | None]) -> dict[str, float]:
    """Expected seconds per name; an unknown one as long as the longest known (0 when none is known)."""
    default = max((s for s in expected.values() if s is not None), default=0.0)
    return {n: default if s is None else s for n, s in expected.items()}


async def expected_by_name(master: Any, names: Sequence[str]) -> dict[str, float | None]:
    """``expected_seconds`` per builder name (a name Buildbot does not know: None)."""
    ids = {b["name"]: b["builderid"] for b in await master.data.get(("builders",))}
    return {n: (await expected_seconds(master, ids[n])) if n in ids else None for n in names}


def prioritize_builders(master: Any, builders: list[Any]) -> defer.Deferred[list[Any]]:
    """``c["prioritizeBuilders"]`` (Buildbot waits for the Deferred)."""
    return defer.ensureDeferred(_prioritize(master, builders))


async def _prioritize(master: Any, builders: list[Any]) -> list[Any]:
    """Buildbot's own order (highest request priority, then oldest
    request) with the expected duration, longest first, between the two."""
    queued: dict[str, tuple[float, float]] = {}  # name -> (-priority, oldest request)
    expected: dict[str, float | None] = {}
    for b in builders:
        priority = await b.get_highest_priority()
        oldest = await b.getOldestRequestTime()
        if priority is not None and oldest is not None:
            queued[b.name] = (-priority, _seconds(oldest))
            expected[b.name] = await expected_seconds(master, await b.getBuilderId())
    cost = costs(expected)

    def key(b: Any) -> tuple[float, float, float, str]:
        if b.name not in queued:  # nothing queued: last, as Buildbot does
            return (math.inf, 0.0, math.inf, b.name)
        prio, oldest = queued[b.name]
        return (prio, -cost[b.name], oldest, b.name)

    return sorted(builders, key=key)
