"""The release matrix's "next" rows: the newest readiness build of each target (``farm/readiness.py``).

One row per readiness builder that has built: ``next: main`` (the
upstream branch) and ``next: v0.13.0rc1`` (the newest pre-release).  Its
``vllm-cpu``/x86_64 cell is the build: ready (green: built, verified and
smoke-tested, nothing uploaded), building, or failed at a step, with the
file the patch no longer applies to (``patch_failure``) and the step's
error line; every other cell is "not applicable".  The row's link names the
build and the version it planned with, and how that version was chosen.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

from twisted.internet import defer

from farm import readiness
from farm.report import caveats, flatten
from farm.states import BAD, CellState, label
from master.matrix import Build, Cell, Link, Row, _failed_step, _running_text, _step_log_url, build_url, column_key


@defer.inlineCallbacks
def collect_next(master: Any, builders: Iterable[str]) -> Generator[Any, Any, list[Build]]:
    """The newest build of each readiness builder, with flat ``props`` and (running or failed) ``steps``."""
    out = []
    for name in builders:
        builderid = yield master.data.updates.findBuilderId(name)
        builds = yield master.data.get(("builders", builderid, "builds"), order=["-number"], limit=1)
        if not builds:
            continue
        b = dict(builds[0], builder=name)
        b["props"] = flatten((yield master.data.get(("builds", b["buildid"], "properties"))))
        b["steps"] = []
        if not b["complete"] or b.get("results") in BAD:
            b["steps"] = list((yield master.data.get(("builds", b["buildid"], "steps"))) or [])
        out.append(b)
    return out


def cell(build: Build, web_url: str) -> Cell:
    """The ``vllm-cpu``/x86_64 cell of a readiness build."""
    props = build.get("props") or {}
    url = build_url(web_url, build["builderid"], build["number"])
    n = build["number"]
    if not build.get("complete"):
        return Cell(CellState.BUILDING, f"#{n} {_running_text(build)}", url=url)
    results = build.get("results")
    if results in BAD:
        step = _failed_step(build.get("steps") or [])
        if step is None:
            return Cell(CellState.FAILED, f"#{n} {label(results)}: {build.get('state_string', '')}", url=url)
        patch = props.get("patch_failure") or {}
        where = f": the patch no longer applies to {patch['file']}" if patch.get("file") else ""
        return Cell(CellState.FAILED, f"#{n} {label(results)} at {step['name']}{where}",
                    url=_step_log_url(web_url, build, step), error=step.get("state_string") or "")
    target = props.get(readiness.PROPERTY)
    if not isinstance(target, dict):  # no such target upstream (no newer pre-release): nothing was checked
        return Cell(CellState.NOT_BUILT, f"#{n}: {build.get('state_string') or 'nothing to check'}", url=url)
    why = "; ".join(caveats(props, results))
    return Cell(CellState.READY, f"ready: #{n} {readiness.PACKAGE} {target.get('version', '?')} built, verified and "
                                 "smoke-tested; nothing uploaded (dry run)", url=url, caveat=why)


def next_rows(builds: list[Build], columns: Iterable[tuple[str, str]], web_url: str) -> tuple[Row, ...]:
    """One "next" row per readiness build from ``collect_next``."""
    rows = []
    for b in builds:
        props = b.get("props") or {}
        target = props.get(readiness.PROPERTY)
        ref = target.get("ref", "?") if isinstance(target, dict) else b.get("builder") or "?"
        cells = {column_key(v, a): (cell(b, web_url) if (v, a) == (readiness.PACKAGE, readiness.ARCH) else
                                    Cell(CellState.NOT_APPLICABLE, f"readiness builds {readiness.PACKAGE} "
                                                                   f"{readiness.ARCH} only"))
                 for v, a in columns}
        state = label(b["results"]) if b.get("complete") else "running"
        text = f"readiness #{b['number']} ({state})" + (f", as {target['why']}" if isinstance(target, dict) else "")
        rows.append(Row(f"next: {ref}", cells, Link(text, build_url(web_url, b["builderid"], b["number"]))))
    return tuple(rows)
