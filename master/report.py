"""The release report: the variant builds of a release, one row each, and the table of them.

Used by the release builder's ``fan_out`` step, the notifications, and the
sandbox, so "the children of a release" and "a build's properties as plain
values" are computed here only.

``children`` is written once as a generator of data-API requests; the same
resource paths exist in Buildbot's data API (``master.data.get``) and in its
REST API (``/api/v2/...``), so ``fetch_children`` drives it inside the master
and the sandbox drives it over HTTP.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from buildbot.data import resultspec
from buildbot.process.results import statusToString
from buildbot.reporters import utils as rutils
from twisted.internet import defer

from master.names import IMAGES

# A data-API request: (resource path, {field: value} equality filters).
Request = tuple[tuple[Any, ...], dict[str, Any]]


def flatten(props: dict | None) -> dict[str, Any]:
    """Build or buildset properties ({name: (value, source)}) as {name: value}."""
    return {k: (v[0] if isinstance(v, list | tuple) else v) for k, v in (props or {}).items()}


def result_name(build: dict) -> str:
    if not build.get("complete", True) or build.get("results") is None:
        return "not finished"
    return statusToString(build["results"])


def children(release_buildid: int) -> Generator[Request, Any, list[dict]]:
    """The variant builds (or still-waiting requests) a release build triggered, newest try of each.

    Each child is a data-API build dict plus ``builder`` (name) and raw
    ``properties``; a request no worker has taken yet is ``{"builder",
    "builderid", "complete": False, "results": None, "state_string":
    "waiting for a worker", "properties"}`` with its buildset's properties.
    """
    out: list[dict] = []
    names: dict[int, str] = {}
    bsets = yield (("buildsets",), {"parent_buildid": release_buildid})
    for bs in bsets or []:
        brs = yield (("buildrequests",), {"buildsetid": bs["bsid"]})
        for br in brs or []:
            if br["builderid"] not in names:
                builder = yield (("builders", br["builderid"]), {})
                names[br["builderid"]] = builder["name"] if builder else str(br["builderid"])
            if names[br["builderid"]] == IMAGES:  # the images a release triggers: not a variant build
                continue
            builds = yield (("buildrequests", br["buildrequestid"], "builds"), {})
            if builds:
                b = dict(sorted(builds, key=lambda x: x["buildid"])[-1])
                b["properties"] = yield (("builds", b["buildid"], "properties"), {})
                b["builder"] = names[br["builderid"]]
                out.append(b)
            else:
                props = yield (("buildsets", bs["bsid"], "properties"), {})
                out.append({"builder": names[br["builderid"]], "builderid": br["builderid"],
                            "buildrequestid": br["buildrequestid"], "complete": False, "results": None,
                            "state_string": "waiting for a worker", "properties": props})
    return out


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
        c["url"] = rutils.getURLForBuild(master, c["builderid"], c["number"]) if "number" in c else ""
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


def child_row(child: dict) -> dict:
    """The table row of one child (see ``children``), with its link and detail lines."""
    props = flatten(child.get("properties"))
    row = row_from_properties(props, result_name(child))
    row["url"] = child.get("url", "")
    row["state"] = child.get("state_string", "")
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
