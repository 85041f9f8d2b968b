"""The release report: the variant builds of a release, one row each, the table and its summary.

Used by the release builder's steps, the notifications, the matrix and the
sandbox, so "the children of a release", its table and "a build's
properties as plain values" are computed here only.  The verdicts over
them (where a build stands, when a release is done, its result) are
``farm.decisions``; ``child_of`` is what those read of a child.

``children`` is written once as a generator of data-API requests; the same
resource paths exist in Buildbot's data API (``master.data.get``) and in its
REST API (``/api/v2/...``), so ``fetch_children`` drives it inside the master
and the sandbox drives it over HTTP.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from buildbot.data import resultspec
from buildbot.reporters import utils as rutils
from twisted.internet import defer

from farm.decisions import Child
from farm.names import IMAGES
from farm.published import build_key
from farm.states import WARNINGS, BuildState, Result, label
from farm.texts import epoch, utc, waiting_text

__all__ = ["Child", "Request", "caveats", "child_of", "child_result", "child_row", "children", "epoch",
           "fetch_children", "finished_release", "flatten", "format_table", "has_usable_worker", "parent_release",
           "release_summary", "result_name", "row_from_properties", "tally", "utc", "waiting_text"]

# A data-API request: (resource path, {field: value} equality filters).
Request = tuple[tuple[Any, ...], dict[str, Any]]


def flatten(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """Build or buildset properties ({name: (value, source)}) as {name: value}."""
    return {k: (v[0] if isinstance(v, list | tuple) else v) for k, v in (props or {}).items()}


def result_name(build: Mapping[str, Any]) -> str:
    """Buildbot's word for a build's result (``success``, ...), ``not finished`` while it runs."""
    if not build.get("complete", True):
        return "not finished"
    return label(build.get("results"))


def has_usable_worker(workers: list[dict[str, Any]] | None) -> bool:
    """Whether any of a builder's workers is connected, or started on demand (``mark_on_demand``),
    and not paused (so a queued request will run)."""
    return any((w.get("connected_to") or w.get("on_demand")) and not w.get("paused") for w in workers or [])


def on_demand_names(master: Any) -> frozenset[str]:
    """The master's latent workers that a queued build starts now (not shut down, not in quarantine
    after a failed start): a build for them waits for a host that is coming, not for one that is not there."""
    from buildbot.worker.latent import AbstractLatentWorker, States

    return frozenset(name for name, w in master.workers.workers.items()
                     if isinstance(w, AbstractLatentWorker) and w.state is not States.SHUT_DOWN
                     and w.quarantine_timer is None)


def mark_on_demand(master: Any, workers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Data-API worker dicts with ``on_demand`` set (``on_demand_names``); the data API has no such field."""
    names = on_demand_names(master)
    return [{**w, "on_demand": w.get("name") in names} for w in workers or []]


def children(release_buildid: int) -> Generator[Request, Any, list[dict[str, Any]]]:
    """The variant builds (or requests no worker has taken) of a release build, the newest per builder.

    A release build's children are the buildsets it triggered, and those
    of earlier tries of the same build request: a master restart re-runs
    the release, whose variant builds from before the restart are still its
    own.  A Buildbot "rebuild" of a variant build keeps its parent, so the
    newest request per builder is the one that counts.

    Each child is a data-API build dict plus ``builder`` (name), ``arch``
    and raw ``properties``.  A request without a running build (not taken
    yet, or re-queued after a lost worker) is ``{"builder", "builderid",
    "buildrequestid", "complete": False, "results": None, "submitted_at",
    "waiting", "state_string", "properties"}``: ``waiting`` is True when no
    worker that could take it is connected ("waiting for an aarch64 worker
    since ..."); ``retried_at`` (epoch) when a build of it was interrupted
    and it was queued again.  A request cancelled before it started is ``complete``
    with its ``results``.
    """
    names: dict[int, str] = {}
    workers: dict[int, bool] = {}
    release = yield (("builds", release_buildid), {})
    parents = {release_buildid}
    if release and release.get("buildrequestid"):
        tries = yield (("buildrequests", release["buildrequestid"], "builds"), {})
        parents |= {b["buildid"] for b in tries or [] if b["buildid"] < release_buildid}
    newest: dict[int, tuple[int, dict[str, Any]]] = {}  # builderid -> (buildrequestid, child)
    for parent in sorted(parents):
        bsets = yield (("buildsets",), {"parent_buildid": parent})
        for bs in bsets or []:
            brs = yield (("buildrequests",), {"buildsetid": bs["bsid"]})
            for br in brs or []:
                bid = br["builderid"]
                if bid in newest and newest[bid][0] > br["buildrequestid"]:
                    continue
                if bid not in names:
                    builder = yield (("builders", bid), {})
                    names[bid] = builder["name"] if builder else str(bid)
                if names[bid] == IMAGES:  # the images a release triggers: not a variant build
                    continue
                builds = yield (("buildrequests", br["buildrequestid"], "builds"), {})
                last = dict(sorted(builds, key=lambda x: x["buildid"])[-1]) if builds else None
                if last is not None and (br["complete"] or not last["complete"]):
                    props = yield (("builds", last["buildid"], "properties"), {})
                    if "arch" not in (props or {}):
                        # A build that has just started has no properties yet: the trigger's say what it is.
                        props = {**((yield (("buildsets", bs["bsid"], "properties"), {})) or {}), **(props or {})}
                    last["properties"] = props
                    child = last
                else:  # never started, cancelled before it started, or re-queued after a retry
                    props = yield (("buildsets", bs["bsid"], "properties"), {})
                    child = {"buildrequestid": br["buildrequestid"], "complete": bool(br["complete"]),
                             "results": br.get("results") if br["complete"] else None,
                             "submitted_at": epoch(br.get("submitted_at")), "properties": props}
                    arch = flatten(props).get("arch", "?")
                    if br["complete"]:
                        child["state_string"] = ("cancelled before it started" if br.get("results") == Result.CANCELLED
                                                 else "finished without a build")
                    else:
                        if bid not in workers:
                            found = yield (("builders", bid, "workers"), {})
                            workers[bid] = has_usable_worker(found)
                        child["waiting"] = not workers[bid]
                        if last is not None:  # a worker took it before (a restart or a lost worker ended it)
                            child["retried_at"] = epoch(last.get("complete_at"))
                        child["state_string"] = (waiting_text(arch, br.get("submitted_at")) if child["waiting"]
                                                 else "queued" + (" again after a retry" if last else ""))
                child.update(builder=names[bid], builderid=bid)
                child.setdefault("arch", flatten(child["properties"]).get("arch", "?"))
                newest[bid] = (br["buildrequestid"], child)
    return [c for _, c in sorted(newest.values(), key=lambda x: x[0])]


@defer.inlineCallbacks
def _data_get(master: Any, request: Request) -> Generator[Any, Any, Any]:
    path, filters = request
    if path[0] == "buildsets" and path[-1] == "properties":  # no data-API endpoint for these
        props = yield master.db.buildsets.getBuildsetProperties(path[1])
        return props
    found = yield master.data.get(path, filters=[resultspec.Filter(k, "eq", [v]) for k, v in filters.items()])
    if path[0] == "builders" and path[-1] == "workers":
        found = mark_on_demand(master, found)
    return found


@defer.inlineCallbacks
def fetch_children(master: Any, release_buildid: int) -> Generator[Any, Any, list[dict[str, Any]]]:
    """``children`` inside the master, through ``master.data``; each built child gets its ``url``."""
    gen = children(release_buildid)
    try:
        request = next(gen)
        while True:
            answer = yield _data_get(master, request)
            request = gen.send(answer)
    except StopIteration as done:
        out: list[dict[str, Any]] = done.value
    for c in out:
        c["url"] = (rutils.getURLForBuild(master, c["builderid"], c["number"]) if "number" in c
                    else rutils.getURLForBuildrequest(master, c["buildrequestid"]))
    return out


def floor_text(smoke: Mapping[str, Any]) -> str:
    """One wheel's floor result as the notes show it: ``Haswell-v4: passed``, ``native only``, ``-``."""
    status = smoke.get("floor")
    if not status:
        return "-"
    return str(status) if status == "native only" else f"{smoke.get('floor_cpu', '?')}: {status}"


def row_from_properties(props: Mapping[str, Any], result: str) -> dict[str, Any]:
    """One line of the release table from a variant build's (flattened) properties."""
    wheels = [w.rsplit("/", 1)[-1] for w in props.get("wheels") or []]
    verify = props.get("verify") or {}
    smoke = props.get("smoke") or {}
    isa = "; ".join(("ISA ok " + v["isa"]) if v.get("ok") and v.get("isa") else
                    ("ISA " + v["isa"] if v.get("isa") else "not verified") for v in verify.values()) or "-"
    uploaded = props.get("uploaded")
    if props.get("dry_run"):
        up = "dry run"
    elif props.get("skip_upload"):
        up = "skipped"
    else:
        up = "yes" if uploaded else "no"
    return {
        "variant": props.get("variant", "?"), "arch": props.get("arch", "?"),
        "wheel": ", ".join(wheels) or "-", "isa": isa,
        "verify": ("ok" if verify and all(v.get("ok") for v in verify.values()) else "FAILED") if verify else "-",
        "smoke": ", ".join(sorted({v.get("status", "?") for v in smoke.values()})) or "-",
        "floor": ", ".join(sorted({floor_text(v) for v in smoke.values()})) or "-",
        "uploaded": up, "result": result,
    }


def caveats(props: Mapping[str, Any], results: int | None) -> list[str]:
    """Why a finished build is not fully tested, in a few words each; [] for a clean one.

    A skipped smoke test with its reason (the CPU lacks the ISA), a wheel
    verify did not pass, or a WARNINGS result whose cause the properties do
    not tell.  What the matrix shows in a published cell and what the
    release summary gives as the reason for WARNINGS.
    """
    out: list[str] = []
    for v in (props.get("smoke") or {}).values():
        if v.get("status") == "skipped":
            out.append(f"smoke skipped: {v.get('reason') or 'this CPU lacks the ISA'}")
        elif v.get("status") not in (None, "passed"):
            out.append(f"smoke {v.get('status')}" + (f": {v['reason']}" if v.get("reason") else ""))
    for v in (props.get("verify") or {}).values():
        if not v.get("ok"):
            out.append(f"verify: {v.get('summary') or 'not passed'}")
    if not out and Result.of(results) == WARNINGS:
        out.append("ended with warnings (see its steps)")
    return list(dict.fromkeys(out))  # once each: several wheels share one reason


def child_of(child: Mapping[str, Any]) -> Child:
    """What the release builder's decisions (``farm.decisions``) read of one child (see ``children``)."""
    props = flatten(child.get("properties"))
    complete = bool(child.get("complete"))
    return Child(buildrequestid=int(child.get("buildrequestid") or 0),
                 key=build_key(props.get("variant", "?"), props.get("arch", "?")),
                 started="buildid" in child, complete=complete,
                 results=Result.of(child.get("results")) if complete else None,
                 waiting=bool(child.get("waiting")), retried_at=child.get("retried_at"))


def child_result(child: Mapping[str, Any]) -> str:
    """A child's state in a word or three: success, failure, cancelled, ..., running, queued, waiting for ..."""
    if child.get("waiting"):
        return f"waiting for an {child.get('arch', '?')} worker"
    if not child.get("complete"):
        return "running" if "buildid" in child else "queued"
    return result_name(child)


def child_row(child: Mapping[str, Any]) -> dict[str, Any]:
    """The table row of one child (see ``children``), with its link and detail lines.

    ``build_state`` (a ``BuildState``) and ``build_result`` (a ``Result``, None
    until it finished) are what the verdicts read; ``result`` is the word the
    table shows.
    """
    props = flatten(child.get("properties"))
    row = row_from_properties(props, child_result(child))
    decided = child_of(child)
    row["build_state"] = decided.state
    row["build_result"] = decided.results
    row["url"] = child.get("url", "")
    row["state"] = child.get("state_string", "")
    row["waiting"] = bool(child.get("waiting"))
    row["since"] = utc(child.get("submitted_at")) if "buildid" not in child else ""
    row["uploaded_urls"] = list(props.get("uploaded") or [])
    row["caveats"] = caveats(props, child.get("results")) if decided.state == BuildState.OK else []
    row["smoke_detail"] = [f"{w}: {v.get('status', '?')}" + (f" ({v['reason']})" if v.get("reason") else "")
                           + (f"; floor {floor_text(v)}" if v.get("floor") else "")
                           for w, v in (props.get("smoke") or {}).items()]
    row["verify_detail"] = [f"{w}: {'ok' if v.get('ok') else 'NOT publishable'} - {v.get('summary', '')}"
                            + (f" [{'; '.join(v['failed'])}]" if v.get("failed") else "")
                            for w, v in (props.get("verify") or {}).items()]
    return row


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = (
        "variant", "arch", "wheel", "isa", "verify", "smoke", "floor", "uploaded", "result")) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def tally(rows: list[dict[str, Any]]) -> dict[BuildState, list[dict[str, Any]]]:
    """``child_row`` rows by where their build stands (``farm.decisions.build_state``)."""
    out: dict[BuildState, list[dict[str, Any]]] = {s: [] for s in BuildState}
    for r in rows:
        out[r["build_state"]].append(r)
    return out


def release_summary(rows: list[dict[str, Any]]) -> str:
    """``5 of 6 variant builds ok, 1 waiting for an aarch64 worker since ...``: what a release's builds did.

    Builds that are ok with caveats (``caveats``) say why after ``; warnings:``.
    """
    t = tally(rows)
    n = len(rows)
    parts = [f"{len(t[BuildState.OK])} of {n} variant build{'' if n == 1 else 's'} ok"]
    failed = t[BuildState.FAILED]
    if failed:
        parts.append(f"{len(failed)} failed ({', '.join(r['variant'] + ' ' + r['arch'] for r in failed)})")
    for state in (BuildState.CANCELLED, BuildState.RUNNING, BuildState.QUEUED):
        if t[state]:
            parts.append(f"{len(t[state])} {state}")
    waiting = t[BuildState.WAITING]
    for arch in sorted({r["arch"] for r in waiting}):
        mine = [r for r in waiting if r["arch"] == arch]
        since = min((r["since"] for r in mine if r.get("since")), default="")
        parts.append(f"{len(mine)} waiting for an {arch} worker" + (f" since {since}" if since else ""))
    why = [f"{r['variant']} {r['arch']} {c}" for r in t[BuildState.OK] for c in r.get("caveats") or []]
    return ", ".join(parts) + (f"; warnings: {'; '.join(why)}" if why else "")


@defer.inlineCallbacks
def parent_release(master: Any, buildrequestid: int) -> Generator[Any, Any, dict[str, Any] | None]:
    """The newest try of the release build that requested ``buildrequestid``, or None (not a release's).

    The newest try counts: a master restart re-runs the release.
    """
    br = yield master.data.get(("buildrequests", buildrequestid))
    bs = (yield master.data.get(("buildsets", br["buildsetid"]))) if br else None
    if not bs or not bs.get("parent_buildid"):
        return None
    parent = yield master.data.get(("builds", bs["parent_buildid"]))
    tries = (yield master.data.get(("buildrequests", parent["buildrequestid"], "builds"))) if parent else None
    return max(tries, key=lambda b: b["buildid"]) if tries else None


@defer.inlineCallbacks
def finished_release(master: Any, build: dict[str, Any]) -> Generator[Any, Any, dict[str, Any] | None]:
    """The release build that triggered ``build`` if it had finished before ``build`` started, else None.

    Such a build waited for a worker of its arch after its release was
    reported ("waiting for an aarch64 worker"): it is announced on its own,
    and publishes on its own (``steps.publish.late``).
    """
    release = yield parent_release(master, build["buildrequestid"])
    if not release or not release["complete"] or release["results"] == Result.RETRY:
        return None
    done, started = epoch(release.get("complete_at")), epoch(build.get("started_at"))
    return release if done is not None and started is not None and done <= started else None
