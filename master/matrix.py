"""The release matrix: one row per vLLM version, one column per variant × arch of ``variants.json``.

Each cell says what a maintainer needs first: the wheel is published (links
to the files in the index that this farm built and verified), the index
holds a foreign file for it (one no build of this farm produced and
verified, ``farm.custody``: the cell says why, it never counts as
published), a build is running (its current step, with the
compile progress), waiting for a worker, failed (the failing step, its first
error line), built as a dry run only, not built yet, or not built for that
version at all (``releases`` in variants.json).

Three parts, so the rules are tested without a master:

* ``collect(master)`` reads the data API inside the master: every release
  build, its children (``farm.report``'s one ``children`` generator), the
  steps of the children that run or failed, and which builders have a
  connected worker;
* ``compute(...)`` turns that and the index listing (``farm.published``)
  into a ``Matrix``, a plain value;
* ``to_json`` / ``to_html`` render it.  ``MatrixApp`` is the WSGI app the
  ``wsgi_dashboards`` www plugin serves under ``/plugins/wsgi_dashboards/releases/``:
  ``index.html`` (the "Release matrix" page in the menu) and ``matrix.json``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from packaging.version import InvalidVersion, Version
from twisted.internet import defer
from twisted.logger import Logger

from farm.custody import split
from farm.names import RELEASE
from farm.report import caveats, fetch_children, flatten, mark_on_demand
from farm.states import BAD, CellState, label
from farm.texts import epoch, utc
from vllm_cpu_build.index import IndexFile, wheel_covers
from vllm_cpu_build.variants import Catalog

Build = dict[str, Any]  # a data-API build or step dict (or ``report.children``'s request dict), as ``collect`` gives it
NAME = "releases"  # the dashboard's name: menu route #/releases, URLs under plugins/wsgi_dashboards/releases/
JSON_FILE = "matrix.json"
_log = Logger()

STATES = tuple(CellState)  # in the order the legend and the JSON list them


def json_url(web_url: str) -> str:
    return f"{web_url.rstrip('/')}/plugins/wsgi_dashboards/{NAME}/{JSON_FILE}"


def page_url(web_url: str) -> str:
    return f"{web_url.rstrip('/')}/#/{NAME}"


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class Cell:
    state: CellState
    text: str
    url: str = ""  # the one link that answers "what is this?"
    files: tuple[Link, ...] = ()  # published wheels in the index
    error: str = ""  # failed: the failing step's first error line (its summary)
    since: int | None = None  # waiting: when the request was submitted (epoch seconds)
    floor: str = ""  # the smoke's floor-CPU result of the newest finished build (the cell's tooltip)
    foreign: tuple[Link, ...] = ()  # files in the index no build of this farm produced and verified
    caveat: str = ""  # published with caveats: why it is not fully tested ("smoke skipped: ...")


@dataclass(frozen=True)
class Row:
    version: str
    cells: dict[str, Cell]
    release: Link | None = None  # the newest release build of this version


@dataclass(frozen=True)
class Matrix:
    columns: tuple[tuple[str, str], ...]  # (variant, arch)
    rows: tuple[Row, ...]
    generated_at: int
    index_url: str
    index_error: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    next_rows: tuple[Row, ...] = ()  # readiness builds (master/matrix_next.py): what the next release will meet


def column_key(variant: str, arch: str) -> str:
    return f"{variant}/{arch}"


# --------------------------------------------------------------------------- reading the master


def build_url(web_url: str, builderid: int, number: int) -> str:
    return f"{web_url.rstrip('/')}/#/builders/{builderid}/builds/{number}"


@defer.inlineCallbacks
def collect(master: Any) -> Generator[Any, Any, dict[str, Any]]:
    """Everything ``compute`` needs from the data API, as plain dicts (runs on the reactor).

    ``{"releases": [release build + flat ``props`` + ``steps`` + ``children``],
    "connected_builders": [builderid, ...]}`` (served by a connected or an on-demand
    worker); each child is ``report.children``'s dict plus ``steps`` when it runs or failed.
    """
    release_id = yield master.data.updates.findBuilderId(RELEASE)
    releases = yield master.data.get(("builders", release_id, "builds"))
    out = []
    for rel in sorted(releases or [], key=lambda b: b["buildid"]):
        rel = dict(rel)
        rel["props"] = flatten((yield master.data.get(("builds", rel["buildid"], "properties"))))
        children = yield fetch_children(master, rel["buildid"])
        for c in children:
            if "buildid" in c and (not c["complete"] or c.get("results") in BAD):
                c["steps"] = list((yield master.data.get(("builds", c["buildid"], "steps"))) or [])
        rel["children"] = children
        rel["steps"] = []
        if rel["complete"] and rel.get("results") in BAD and not children:
            rel["steps"] = list((yield master.data.get(("builds", rel["buildid"], "steps"))) or [])
        out.append(rel)
    workers = mark_on_demand(master, (yield master.data.get(("workers",))))
    connected = sorted({c["builderid"] for w in workers if w.get("connected_to") or w.get("on_demand")
                        for c in w.get("configured_on") or []})
    return {"releases": out, "connected_builders": connected}


# --------------------------------------------------------------------------- the rules


def _version_key(v: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def _release_of(filename: str) -> str | None:
    """The upstream version a wheel belongs to (``0.12.0.post1`` -> ``0.12.0``)."""
    try:
        v = Version(filename.split("-")[1])
    except (IndexError, InvalidVersion):
        return None
    pre = "".join(str(p) for p in v.pre) if v.pre else ""
    return ".".join(str(p) for p in v.release) + pre


def _failed_step(steps: Iterable[Build]) -> Build | None:
    return next((s for s in steps if s.get("results") in BAD), None)


def _step_log_url(web_url: str, child: Build, step: Build) -> str:
    return f"{build_url(web_url, child['builderid'], child['number'])}/steps/{step['number']}/logs/stdio"


def _running_text(child: Build) -> str:
    steps = child.get("steps") or []
    current = next((s for s in reversed(steps) if s.get("started_at") and not s.get("complete")), None)
    if current:
        return f"{current['name']}: {current.get('state_string') or 'running'}"
    return child.get("state_string") or "starting"


def _request_url(web_url: str, child: Build) -> str:
    return f"{web_url.rstrip('/')}/#/buildrequests/{child['buildrequestid']}"


def _cell_from_build(child: Build, web_url: str, no_worker: Callable[[Build], bool]) -> Cell:
    """One child of a release (``report.children``): a build, or a request without one."""
    props = flatten(child.get("properties"))
    dry = " (dry run)" if props.get("dry_run") else ""
    results = child.get("results")
    if "buildid" not in child:
        if child.get("complete"):  # cancelled before any worker took it
            return Cell(CellState.FAILED, f"request {label(results)}{dry}: {child.get('state_string') or 'not built'}",
                        url=_request_url(web_url, child))
        since = epoch(child.get("submitted_at"))
        absent = child["waiting"] if "waiting" in child else no_worker(child)
        what = f"waiting for an {props.get('arch', '?')} worker" if absent else "queued (its workers are busy)"
        of = f", {props.get('variant', '?')} {props['version']}" if props.get("version") else ""
        return Cell(CellState.WAITING, f"{what} since {utc(since) or '?'}{of}{dry}", url=_request_url(web_url, child),
                    since=since)
    url = build_url(web_url, child["builderid"], child["number"])
    if not child.get("complete"):
        return Cell(CellState.BUILDING, f"#{child['number']} {_running_text(child)}{dry}", url=url)
    if results in BAD:
        step = _failed_step(child.get("steps") or [])
        if step is None:
            return Cell(CellState.FAILED, f"#{child['number']} {label(results)}{dry}: "
                                          f"{child.get('state_string', '')}", url=url)
        return Cell(CellState.FAILED, f"#{child['number']} {label(results)} at {step['name']}{dry}",
                    url=_step_log_url(web_url, child, step), error=step.get("state_string") or "")
    if props.get("dry_run"):
        return Cell(CellState.DRY_RUN, f"dry run only: #{child['number']} {label(results)}", url=url)
    if props.get("skip_upload"):
        return Cell(CellState.DRY_RUN, f"built, upload skipped: #{child['number']} {label(results)}", url=url)
    return Cell(CellState.NOT_BUILT, f"#{child['number']} {label(results)} but not in the index", url=url)


def _order(child: Build) -> tuple[int, int]:
    return child.get("buildrequestid") or 0, child.get("buildid") or 0


def _newest(children: list[Build]) -> tuple[Build | None, Build | None, Build | None]:
    """(newest running build, oldest waiting request, newest finished build or request) of one cell."""
    running = [c for c in children if "buildid" in c and not c.get("complete")]
    waiting = [c for c in children if "buildid" not in c and not c.get("complete")]
    done = [c for c in children if c.get("complete")]
    return (max(running, key=_order, default=None), min(waiting, key=_order, default=None),
            max(done, key=_order, default=None))


CellKey = tuple[str, str, str]  # (version, package, arch)


def _release_children(snapshot: dict[str, Any]) -> tuple[dict[CellKey, list[Build]], dict[str, Build]]:
    """({cell: its variant builds and requests, from every release}, {version: its newest release build})."""
    by_cell: dict[CellKey, list[Build]] = {}
    newest_release: dict[str, Build] = {}
    for rel in snapshot.get("releases", []):
        version = rel.get("props", {}).get("version")
        if not version:
            continue  # failed before it knew its version (not a release tag)
        newest_release[version] = rel  # sorted by buildid: the last one wins
        for c in rel.get("children", []):
            p = flatten(c.get("properties"))
            by_cell.setdefault((p.get("version") or version, p.get("variant", "?"), p.get("arch", "?")), []).append(c)
    return by_cell, newest_release


def _index_files(index: dict[str, list[IndexFile]] | None,
                 custody: Mapping[str, str]) -> tuple[dict[CellKey, list[IndexFile]], dict[CellKey, list[Link]]]:
    """The index's wheels (not yanked) by the cell they fill, (upstream release, package, arch): (this farm's,
    the foreign ones as links whose text says why)."""
    out: dict[CellKey, list[IndexFile]] = {}
    foreign: dict[CellKey, list[Link]] = {}
    for package, listed in (index or {}).items():
        files, other = split(listed, custody)
        for x in other:
            release = _release_of(x.file)
            url = next((f.url for f in listed if f.filename == x.file), "")
            for arch in ("x86_64", "aarch64"):
                if release is not None and wheel_covers(x.file, release, arch):
                    foreign.setdefault((release, package, arch), []).append(Link(f"{x.file}: {x.why}", url))
        for f in files:
            release = _release_of(f.filename)
            if release is None or f.yanked:
                continue
            for arch in ("x86_64", "aarch64"):
                if wheel_covers(f.filename, release, arch):
                    out.setdefault((release, package, arch), []).append(f)
    return out, foreign


def _release_failed_early(rel: Build | None, web_url: str) -> Cell | None:
    """A finished release that failed before it started any build: every applicable cell says where."""
    if rel is None or not rel.get("complete") or rel.get("results") not in BAD or rel.get("children"):
        return None
    step = _failed_step(rel.get("steps") or [])
    where = f" at {step['name']}" if step else ""
    url = _step_log_url(web_url, rel, step) if step else build_url(web_url, rel["builderid"], rel["number"])
    return Cell(CellState.FAILED, f"release #{rel['number']} {label(rel['results'])}{where}", url=url,
                error=(step or {}).get("state_string", ""))


def _foreign_cell(foreign: tuple[Link, ...], files: tuple[Link, ...], done: Build | None, web_url: str) -> Cell:
    """The index holds files no build of this farm made: that first (they are not published)."""
    names = ", ".join(f.text.split(": ", 1)[0] for f in foreign)
    why = "; ".join(f.text for f in foreign)
    text = f"foreign file(s) on the index: {names}"
    url = foreign[0].url
    if done is not None:
        last = _cell_from_build(done, web_url, lambda c: False)
        text += f"; newest build {last.text}"
        url, why = last.url, f"{why}; {last.error}" if last.error else why
    return Cell(CellState.FOREIGN, text, url, files, "not built and verified by this farm: " + why,
                foreign=foreign)
def _caveats(children: list[Build]) -> list[str]:
    """What the newest finished real (not dry-run) build that made a cell's wheels left untested."""
    real = [c for c in children if c.get("complete") and "buildid" in c and c.get("results") not in BAD
            and not flatten(c.get("properties")).get("dry_run")]
    newest = max(real, key=_order, default=None)
    return caveats(flatten(newest.get("properties")), newest.get("results")) if newest else []


def _cell(children: list[Build], files: tuple[Link, ...], rel: Build | None, web_url: str,
          no_worker: Callable[[Build], bool], foreign: tuple[Link, ...] = ()) -> Cell:
    """One applicable cell: an active build first, then foreign files, then this farm's files in the index,
    then the newest finished build."""
    running, waiting, done = _newest(children)
    active = running or waiting
    if active is not None:
        cell = _cell_from_build(active, web_url, no_worker)
        return Cell(cell.state, cell.text, cell.url, files, cell.error, cell.since, foreign=foreign)
    if foreign:
        return _foreign_cell(foreign, files, done, web_url)
    if files:
        why = "; ".join(_caveats(children))
        return Cell(CellState.PUBLISHED_CAVEATS if why else CellState.PUBLISHED, ", ".join(f.text for f in files),
                    files[0].url, files, floor=_floor_line(done), caveat=why)
    if done is not None:
        return replace(_cell_from_build(done, web_url, no_worker), floor=_floor_line(done))
    return _release_failed_early(rel, web_url) or Cell(CellState.NOT_BUILT, "not built")


def _floor_line(child: Build | None) -> str:
    """``floor Haswell-v4: passed`` (or ``floor: native only``) for each wheel the build smoked."""
    smoke = flatten((child or {}).get("properties")).get("smoke") or {}
    lines = (f"floor: {v['floor']}" if v["floor"] == "native only" else f"floor {v.get('floor_cpu', '?')}: {v['floor']}"
             for v in smoke.values() if isinstance(v, dict) and v.get("floor"))
    return "; ".join(dict.fromkeys(lines))


def _release_link(rel: Build | None, web_url: str) -> Link | None:
    if rel is None:
        return None
    state = label(rel["results"]) if rel.get("complete") else "running"
    return Link(f"release #{rel['number']} ({state})", build_url(web_url, rel["builderid"], rel["number"]))


def compute(catalog: Catalog, snapshot: dict[str, Any], index: dict[str, list[IndexFile]] | None, *, web_url: str,
            index_url: str, custody: Mapping[str, str], index_error: str = "", now: float | None = None) -> Matrix:
    """The matrix from ``collect``'s snapshot and the index listing per package (None: unreadable).

    ``custody``: the ledger's {file name: sha256} for the listed files; any other file is foreign.
    """
    columns = tuple((v.package, a) for v, a in catalog.builds())
    by_cell, newest_release = _release_children(snapshot)
    files_by_cell, foreign_by_cell = _index_files(index, custody)
    connected = set(snapshot.get("connected_builders", []))

    def no_worker(child: Build) -> bool:
        return child["builderid"] not in connected

    rows = []
    versions = set(newest_release) | {version for version, _, _ in (*files_by_cell, *foreign_by_cell)}
    for version in sorted(versions, key=_version_key, reverse=True):
        applicable = {v.package for v in catalog.for_release(version)}
        rel = newest_release.get(version)
        cells: dict[str, Cell] = {}
        for package, arch in columns:
            if package not in applicable:
                cells[column_key(package, arch)] = Cell(CellState.NOT_APPLICABLE, "not built for this version")
                continue
            files = tuple(Link(f.filename, f.url) for f in sorted(files_by_cell.get((version, package, arch), []),
                                                                  key=lambda f: f.filename))
            foreign = tuple(foreign_by_cell.get((version, package, arch), []))
            cells[column_key(package, arch)] = _cell(by_cell.get((version, package, arch), []), files, rel, web_url,
                                                     no_worker, foreign)
        rows.append(Row(version, cells, _release_link(rel, web_url)))
    notes = (f"index {index_url} not readable: {index_error}",) if index_error else ()
    return Matrix(columns, tuple(rows), int(now if now is not None else time.time()), index_url, index_error, notes)


# --------------------------------------------------------------------------- rendering


def to_json(m: Matrix) -> dict[str, Any]:
    """The documented JSON: ``columns`` [{key, variant, arch}], ``rows`` [{version, release, cells{key: cell}}]."""
    return {
        "generated_at": m.generated_at,
        "index": m.index_url,
        "index_error": m.index_error or None,
        "states": list(STATES),
        "columns": [{"key": column_key(v, a), "variant": v, "arch": a} for v, a in m.columns],
        "rows": [_row_json(r) for r in m.rows],
        "next": [_row_json(r) for r in m.next_rows],
    }


def _row_json(r: Row) -> dict[str, Any]:
    return {"version": r.version, "release": asdict(r.release) if r.release else None,
            "cells": {k: {**asdict(c), "files": [asdict(f) for f in c.files], "foreign": [asdict(f) for f in c.foreign]}
                      for k, c in r.cells.items()}}


# Fits the window (1280 px and up): fixed layout, every text wraps, even file names and error lines.
_STYLE = """
.vcm{max-width:100%;overflow-wrap:anywhere}
.vcm table{border-collapse:collapse;font-size:13px;table-layout:fixed;width:100%}
.vcm th,.vcm td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;overflow-wrap:anywhere;word-break:break-word}
.vcm col.version{width:7.5em}
.vcm .published{background:#dff0d8}.vcm .foreign{background:#f0ad4e;color:#000}.vcm .building{background:#d9edf7}
.vcm .published-with-caveats{background:#e9f0c9;box-shadow:inset 5px 0 0 #e0a800}
.vcm .caveat{display:block;color:#7a5b00;font-style:italic;margin-top:2px}
.vcm .waiting{background:#fcf8e3}.vcm .failed{background:#f2dede}
.vcm .ready{background:#dff0d8}.vcm tr.next th{background:#eef4fb}
.vcm .dry-run{background:#eee8f7}.vcm .not-built{background:#fff}
.vcm .not-applicable{background:#f5f5f5;color:#999}
.vcm .state{font-weight:bold;display:block}
.vcm .error{font-family:monospace;font-size:12px;display:block;white-space:pre-wrap}
.vcm .legend span{padding:2px 6px;margin-right:4px;border:1px solid #ccc}
"""


def _a(text: str, url: str) -> str:
    return f'<a href="{html.escape(url)}">{html.escape(text)}</a>' if url else html.escape(text)


def _cell_html(key: str, version: str, c: Cell) -> str:
    css = c.state.replace(" ", "-")
    parts = [f'<span class="state">{html.escape(c.state)}</span>']
    if c.state in (CellState.PUBLISHED, CellState.PUBLISHED_CAVEATS):
        parts += [_a(f.text, f.url) + "<br>" for f in c.files]
        if c.caveat:
            parts.append(f'<span class="caveat">{html.escape(c.caveat)}</span>')
    else:
        parts.append(_a(c.text, c.url))
        if c.error:
            parts.append(f'<span class="error">{html.escape(c.error)}</span>')
        if c.files:
            parts.append("<br>published: " + ", ".join(_a(f.text, f.url) for f in c.files))
        if c.caveat:
            parts.append(f'<span class="caveat">{html.escape(c.caveat)}</span>')
    # The tooltip: why a foreign file is not published (no build of this farm made and verified it),
    # else the newest build's floor-CPU smoke result.
    tip_text = c.error if c.state == CellState.FOREIGN else c.floor
    tip = f' title="{html.escape(tip_text)}"' if tip_text else ""
    return (f'<td class="{css}"{tip} data-state="{html.escape(c.state)}" data-version="{html.escape(version)}" '
            f'data-column="{html.escape(key)}">{"".join(parts)}</td>')


def to_html(m: Matrix, json_href: str) -> str:
    """The page body (a fragment: the www plugin puts it inside Buildbot's own page)."""
    head = "".join(f"<th>{html.escape(v)}<br>{html.escape(a)}</th>" for v, a in m.columns)
    body = []
    for kind, r in [*(("next", r) for r in m.next_rows), *(("release", r) for r in m.rows)]:
        cells = "".join(_cell_html(column_key(v, a), r.version, r.cells[column_key(v, a)]) for v, a in m.columns)
        rel = f"<br><small>{_a(r.release.text, r.release.url)}</small>" if r.release else ""
        body.append(f'<tr class="{kind}" data-version="{html.escape(r.version)}"><th>{html.escape(r.version)}{rel}'
                    f'</th>{cells}</tr>')
    legend = "".join(f'<span class="{s.replace(" ", "-")}">{html.escape(s)}</span>' for s in STATES)
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in m.notes)
    rows = "".join(body) or f'<tr><td colspan="{len(m.columns) + 1}">no release yet</td></tr>'
    return (f'<div class="vcm"><style>{_STYLE}</style><h2>Release matrix</h2>'
            f'<p>One row per vLLM version, one column per package × arch (variants.json); the "next" rows '
            f'on top are the readiness builds (nightly dry runs of the upstream branch and newest pre-release). '
            f'Index: {_a(m.index_url, m.index_url)}. As JSON: {_a(json_href, json_href)}. '
            f'Generated {html.escape(utc(m.generated_at) or "?")}; reload the page to refresh.</p>{notes}'
            f'<p class="legend">{legend}</p>'
            f'<table><colgroup><col class="version"></colgroup>'
            f'<thead><tr><th>version</th>{head}</tr></thead><tbody>{rows}</tbody></table></div>')


# --------------------------------------------------------------------------- the WSGI app
