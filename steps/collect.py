"""What the release builder's steps read from Buildbot's data API, as ``farm.decisions``' plain values.

Reads only: no step decides anything here.  Every function runs on the
reactor (the data API and the database connector return Deferreds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from buildbot.data import resultspec

from farm import inputs
from farm.decisions import OpenRequest, PastBuild
from farm.report import flatten, has_usable_worker, mark_on_demand
from farm.states import Result
from farm.texts import epoch

Master = Any  # buildbot.master.BuildMaster (Buildbot ships no type information)


def _eq(name: str, *values: Any) -> Any:
    return resultspec.Filter(name, "eq", list(values))


async def builder_id(master: Master, builder: str) -> int:
    return int(await master.data.updates.findBuilderId(builder))


async def open_requests(master: Master, builder: str, *, workers: bool = False) -> list[OpenRequest]:
    """Unfinished build requests of ``builder``, oldest first, with only their trusted properties.

    The release, the re-check and the fan-out all ask "is this already
    queued or running?": the answer is in the requests' buildset properties,
    of which only those a build of that request would itself trust count
    (``farm/inputs.py``).  ``workers``: also whether a connected, unpaused
    worker of the builder could take them.
    """
    bid = await builder_id(master, builder)
    brs = await master.data.get(("builders", bid, "buildrequests"), filters=[_eq("complete", False)])
    available = True
    if workers and brs:
        available = has_usable_worker(mark_on_demand(master, await master.data.get(("builders", bid, "workers"))))
    out = []
    for br in sorted(brs or [], key=lambda r: r["buildrequestid"]):
        raw = await master.db.buildsets.getBuildsetProperties(br["buildsetid"])
        props = flatten({k: v for k, v in raw.items() if inputs.trusted(k, v[1])})
        out.append(OpenRequest(br["buildrequestid"], props, claimed=bool(br.get("claimed")),
                               submitted_at=epoch(br.get("submitted_at")), worker_available=available))
    return out


async def release_requests(master: Master, builder: str, fan_out_step: str, older_than: int) -> list[OpenRequest]:
    """The open requests of the release builder older than ``older_than``, with their tag and fan-out state.

    ``branch`` is the tag a change named (the buildset's source stamp), read
    only when the request's properties name no version and no tag;
    ``fanned_out`` whether a build of the request has started ``fan_out_step``.
    """
    bid = await builder_id(master, builder)
    brs = await master.data.get(("builders", bid, "buildrequests"), filters=[_eq("complete", False)])
    out = []
    for br in sorted(brs or [], key=lambda r: r["buildrequestid"]):
        if br["buildrequestid"] >= older_than:
            continue
        raw = await master.db.buildsets.getBuildsetProperties(br["buildsetid"])
        props = flatten({k: v for k, v in raw.items() if inputs.trusted(k, v[1])})
        branch = ""
        if not (props.get("versions") or props.get("version") or props.get("tag")):
            bs = await master.data.get(("buildsets", br["buildsetid"]))
            branch = next((ss["branch"] for ss in (bs or {}).get("sourcestamps") or [] if ss.get("branch")), "")
        out.append(OpenRequest(br["buildrequestid"], props, branch=str(branch),
                               fanned_out=await _started_step(master, br["buildrequestid"], fan_out_step)))
    return out


async def _started_step(master: Master, brid: int, step: str) -> bool:
    for b in await master.data.get(("buildrequests", brid, "builds")) or []:
        steps = await master.data.get(("builds", b["buildid"], "steps"))
        if any(st["name"] == step and st["started_at"] for st in steps or []):
            return True
    return False


async def finished_builds(master: Master, builder: str, *, results: Sequence[Result] = (),
                          limit: int | None = None) -> list[PastBuild]:
    """Finished builds of ``builder``, newest first, with their properties (only ``results`` when given)."""
    bid = await builder_id(master, builder)
    filters = [_eq("complete", True)] + ([_eq("results", *[int(r) for r in results])] if results else [])
    builds = await master.data.get(("builders", bid, "builds"), filters=filters, order=["-buildid"], limit=limit)
    out = []
    for b in builds or []:
        props = flatten(await master.data.get(("builds", b["buildid"], "properties")))
        out.append(PastBuild(Result(b["results"]), props))
    return out


async def builds_of_release_so_far(master: Master, bsid: int) -> tuple[int | None, dict[int, list[int]]]:
    """For a Buildbot "rebuild" (buildset ``bsid``): (the first release build it rebuilds, or None if it is
    not a rebuild, {buildset id of every rebuild of that build: its builds})."""
    bs = await master.data.get(("buildsets", bsid))
    first = (bs or {}).get("rebuilt_buildid")
    if not first:
        return None, {}
    rebuilds: dict[int, list[int]] = {}
    for other in await master.data.get(("buildsets",), filters=[_eq("rebuilt_buildid", first)]) or []:
        builds: list[int] = []
        for br in await master.data.get(("buildrequests",), filters=[_eq("buildsetid", other["bsid"])]) or []:
            builds += [b["buildid"] for b in await master.data.get(
                ("buildrequests", br["buildrequestid"], "builds")) or []]
        rebuilds[other["bsid"]] = builds
    return int(first), rebuilds
