"""The release report: the variant builds of a release, one row each, the table and the verdict.

Used by the release builder's ``fan_out`` step, the notifications, and the
sandbox, so "the children of a release", "waiting for an aarch64 worker",
a release's result from its builds and "a build's properties as plain
values" are computed here only.

``children`` is written once as a generator of data-API requests; the same
resource paths exist in Buildbot's data API (``master.data.get``) and in its
REST API (``/api/v2/...``), so ``fetch_children`` drives it inside the master
and the sandbox drives it over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from buildbot.data import resultspec
from buildbot.process.results import CANCELLED, FAILURE, SUCCESS, WARNINGS, statusToString
from buildbot.reporters import utils as rutils
from twisted.internet import defer

from farm.names import IMAGES

# A data-API request: (resource path, {field: value} equality filters).
Request = tuple[tuple[Any, ...], dict[str, Any]]


def flatten(props: dict | None) -> dict[str, Any]:
    """Build or buildset properties ({name: (value, source)}) as {name: value}."""
    return {k: (v[0] if isinstance(v, list | tuple) else v) for k, v in (props or {}).items()}


def result_name(build: dict) -> str:
    if not build.get("complete", True) or build.get("results") is None:
        return "not finished"
    return statusToString(build["results"])


def epoch(value: Any) -> int | None:
    """A data-API timestamp as seconds since the epoch (datetime inside the master, int over REST)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    return int(value.timestamp())


def utc(value: Any) -> str:
    """``2026-03-02 10:11 UTC`` for a data-API timestamp; "" when unknown."""
    secs = epoch(value)
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(secs)) if secs is not None else ""


def waiting_text(arch: str, since: Any) -> str:
    when = utc(since)
    return f"waiting for an {arch} worker" + (f" since {when}" if when else "")


def has_usable_worker(workers: list[dict] | None) -> bool:
    """Whether any of a builder's workers is connected and not paused (so a queued request will run)."""
    return any(w.get("connected_to") and not w.get("paused") for w in workers or [])


def children(release_buildid: int) -> Generator[Request, Any, list[dict]]:
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
    newest: dict[int, tuple[int, dict]] = {}  # builderid -> (buildrequestid, child)
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
                        child["state_string"] = ("cancelled before it started" if br.get("results") == CANCELLED
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
def _data_get(master, request: Request):
    path, filters = request
    if path[0] == "buildsets" and path[-1] == "properties":  # no data-API endpoint for these
        props = yield master.db.buildsets.getBuildsetProperties(path[1])
        return props
    found = yield master.data.get(path, filters=[resultspec.Filter(k, "eq", [v]) for k, v in filters.items()])
    return found


@defer.inlineCallbacks
def fetch_children(master, release_buildid: int):
    """``children`` inside the master, through ``master.data``; each built child gets its ``url``."""
    gen = children(release_buildid)
    try:
        request = next(gen)
        while True:
            answer = yield _data_get(master, request)
            request = gen.send(answer)
    except StopIteration as done:
        out = done.value
    for c in out:
        c["url"] = (rutils.getURLForBuild(master, c["builderid"], c["number"]) if "number" in c
                    else rutils.getURLForBuildrequest(master, c["buildrequestid"]))
    return out


def row_from_properties(props: dict, result: str) -> dict:
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
        "uploaded": up, "result": result,
    }


def child_result(child: dict) -> str:
    """A child's state in a word or three: success, failure, cancelled, ..., running, queued, waiting for ..."""
    if child.get("waiting"):
        return f"waiting for an {child.get('arch', '?')} worker"
    if not child.get("complete"):
        return "running" if "buildid" in child else "queued"
    return result_name(child)


def child_row(child: dict) -> dict:
    """The table row of one child (see ``children``), with its link and detail lines."""
    props = flatten(child.get("properties"))
    row = row_from_properties(props, child_result(child))
    row["url"] = child.get("url", "")
    row["state"] = child.get("state_string", "")
    row["waiting"] = bool(child.get("waiting"))
    row["since"] = utc(child.get("submitted_at")) if "buildid" not in child else ""
    row["uploaded_urls"] = list(props.get("uploaded") or [])
    row["smoke_detail"] = [f"{w}: {v.get('status', '?')}" + (f" ({v['reason']})" if v.get("reason") else "")
                           for w, v in (props.get("smoke") or {}).items()]
    row["verify_detail"] = [f"{w}: {'ok' if v.get('ok') else 'NOT publishable'} - {v.get('summary', '')}"
                            + (f" [{'; '.join(v['failed'])}]" if v.get("failed") else "")
                            for w, v in (props.get("verify") or {}).items()]
    return row


def format_table(rows: list[dict], columns: tuple[str, ...] = ("variant", "arch", "wheel", "isa", "verify",
                                                                "smoke", "uploaded", "result")) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


OK = ("success", "warnings")
_BAD = ("failure", "exception")


def tally(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by outcome: ok, failed, cancelled, running, queued, waiting (no worker for the arch)."""
    out: dict[str, list[dict]] = {k: [] for k in ("ok", "failed", "cancelled", "running", "queued", "waiting")}
    for r in rows:
        res = r["result"]
        key = ("ok" if res in (*OK, "skipped") else "failed" if res in _BAD else "cancelled" if res == "cancelled"
               else "waiting" if r.get("waiting") else res if res in ("running", "queued") else "failed")
        out[key].append(r)
    return out


def release_summary(rows: list[dict]) -> str:
    """``5 of 6 variant builds ok, 1 waiting for an aarch64 worker since ...``: what a release's builds did."""
    t = tally(rows)
    n = len(rows)
    parts = [f"{len(t['ok'])} of {n} variant build{'' if n == 1 else 's'} ok"]
    if t["failed"]:
        parts.append(f"{len(t['failed'])} failed ({', '.join(r['variant'] + ' ' + r['arch'] for r in t['failed'])})")
    for key in ("cancelled", "running", "queued"):
        if t[key]:
            parts.append(f"{len(t[key])} {key}")
    for arch in sorted({r["arch"] for r in t["waiting"]}):
        mine = [r for r in t["waiting"] if r["arch"] == arch]
        since = min((r["since"] for r in mine if r.get("since")), default="")
        parts.append(f"{len(mine)} waiting for an {arch} worker" + (f" since {since}" if since else ""))
    return ", ".join(parts)


def release_results(rows: list[dict]) -> int:
    """A release's result from its builds: a failed or cancelled one fails it, one waiting for a worker warns."""
    t = tally(rows)
    if t["failed"] or t["cancelled"]:
        return FAILURE
    if t["waiting"] or any(r["result"] == "warnings" for r in t["ok"]):
        return WARNINGS
    return SUCCESS
