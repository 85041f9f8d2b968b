"""A release tagged while the master was down is caught after a restart, exactly once.

Real processes on 127.0.0.1 (pypiserver, master with SQLite, two workers, a
git upstream), a master with a 5 s ``recheck_interval``.  The master sees the
upstream's tags, stops; three tags are pushed while it is down: a release
(built and uploaded for real), a release whose wheels are already in the
index and a release candidate.  The master restarts on the same basedir and
database.  Both the GitPoller (its ``lastRev`` state is in the database) and
the periodic re-check can notice the release: every x86_64 wheel must be
uploaded once, the published release and the rc never built.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from farm.names import RECHECK, RELEASE, builder_name
from farm.report import flatten
from sandbox import Sandbox
from tests.e2e.services import adopt, make_wheel
from vllm_cpu_build.index import list_index_files
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INTERVAL = 5  # recheck_interval, seconds
MISSED = "0.13.0"  # tagged while the master is down; nothing published yet
PUBLISHED = "0.12.1"  # tagged while down, its wheels already in the index
RC = "0.13.1rc1"  # a pre-release: never built under default settings


def props(obj: dict) -> dict:
    return flatten(obj.get("properties"))


def release_builds(sb: Sandbox, version: str) -> list[dict]:
    return [b for b in sb.release_builds() if props(b).get("version") == version]


def recheck_builds(sb: Sandbox) -> list[dict]:
    return sb.api(f"builders/{sb.builder_id(RECHECK)}/builds", order="buildid")


def variant_builds(sb: Sandbox, version: str) -> list[dict]:
    """Every variant × arch build of ``version``, whichever release started it."""
    out = []
    for b in sb.release_builds():
        if props(b).get("version") == version:
            out.extend(sb.children(b["buildid"])[0])
    return out


def x86_uploaded(sb: Sandbox, version: str) -> bool:
    """Every x86_64 variant of ``version`` has an uploaded build and none is still open."""
    names = sb.builders()
    want = {builder_name(v.package, "x86_64") for v in load().for_release(version) if "x86_64" in v.arches}
    builds = [b for b in variant_builds(sb, version) if names[b["builderid"]] in want]
    done = {names[b["builderid"]] for b in builds if b["complete"] and props(b).get("uploaded")}
    return done == want and all(b["complete"] for b in builds)


def buildset_reason(sb: Sandbox, build: dict) -> str:
    br = sb.api(f"buildrequests/{build['buildrequestid']}")[0]
    return sb.api(f"buildsets/{br['buildsetid']}")[0]["reason"]


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root: Path = tmp_path_factory.mktemp("recheck")
    # 0.12.0 predates recheck_since: the running master has nothing to catch up on.
    sb = Sandbox(root / "sb", tags=["v0.12.0"], web_port=0, worker_port=0, index_port=0, poll_interval=1,
                 recheck_since="0.12.1", recheck_interval=INTERVAL, quiet=True)
    try:
        t0 = time.monotonic()
        sb.start()
        # The timer runs while the master is up: one re-check has found nothing to do.
        sb.until(lambda: any(b["complete"] for b in recheck_builds(sb)), 180, "a first periodic re-check")
        before = {b["buildid"] for b in recheck_builds(sb)}
        sb.stop_master()
        t_down = time.monotonic()
        planted = [make_wheel(sb.root / "index", v.dist_name, PUBLISHED, f"cp38-abi3-manylinux_2_28_{arch}")
                   for v in load().for_release(PUBLISHED) for arch in v.arches]
        adopt(sb.master_dir / "state.sqlite", sb.simple_url, *planted)  # published by this farm earlier
        for tag in ("v" + PUBLISHED, "v" + MISSED, "v" + RC):
            sb.push_tag(tag)
        # Down longer than one interval: the timer missed an actuation, as a real outage would.
        time.sleep(max(0.0, INTERVAL + 1 - (time.monotonic() - t_down)))
        t_up = time.monotonic()
        sb.start_master(wait_workers=True)
        # Five builds on two workers: minutes on a busy machine; the bound only says "it happens".
        sb.until(lambda: x86_uploaded(sb, MISSED), 900, f"every x86_64 wheel of {MISSED}", step=1)
        seconds = time.monotonic() - t_up
        # Two more timer periods after every x86_64 wheel is up: nothing new may start.
        seen = len(recheck_builds(sb))
        sb.until(lambda: sum(b["complete"] for b in recheck_builds(sb)) >= seen + 2, 24 * INTERVAL,
                  "two re-checks after the upload")
        print(f"\nsetup {t_up - t0:.1f}s; restart -> every x86_64 wheel of {MISSED} uploaded: {seconds:.1f}s")
        yield {"sb": sb, "before": before, "seconds": seconds}
    finally:
        sb.stop()


def test_missed_release_built_and_uploaded_once(restarted: dict) -> None:
    sb: Sandbox = restarted["sb"]
    names = sb.builders()
    x86 = sorted(v.package for v in load().for_release(MISSED) if "x86_64" in v.arches)
    builds = variant_builds(sb, MISSED)
    x86_builds = [b for b in builds if names[b["builderid"]].endswith("x86_64")]
    # One build per x86_64 variant, however many releases poller and re-check started.
    assert Counter(names[b["builderid"]] for b in x86_builds) == Counter(builder_name(p, "x86_64") for p in x86)
    for b in x86_builds:
        p = props(b)
        assert b["results"] in (0, 1), (names[b["builderid"]], b["state_string"])
        assert p["uploaded"] and not p.get("dry_run"), p
    for pkg in x86:
        files = [f.filename for f in list_index_files(sb.simple_url, pkg)
                 if str(parse_wheel_filename(f.filename)[1]) == MISSED]
        assert files and len(files) == len(set(files)), files
        assert all(f.endswith("_x86_64.whl") for f in files), files
    # How fast is printed by the fixture (and measured by `make bench`); the fixture's
    # bounded wait is the liveness check, not a timed assertion on a shared machine.


def test_periodic_recheck_noticed_it(restarted: dict) -> None:
    sb: Sandbox = restarted["sb"]
    after = [b for b in recheck_builds(sb) if b["buildid"] not in restarted["before"]]
    assert len(after) >= 3
    for b in after:  # all from the timer; nobody pressed "Re-check now"
        assert "Periodic scheduler named 'recheck-periodic'" in buildset_reason(sb, b), b
        assert b["results"] == 0, b["state_string"]
    first = sb.build_logs(after[0]["buildid"])["recheck/recheck"]
    # At restart nothing of MISSED is published: the re-check sees each build it lacks
    # (and starts a release unless the poller's is already queued).
    assert f"{MISSED} (v{MISSED}) vllm-cpu x86_64: not in the index" in first, first
    started_by = {buildset_reason(sb, b) for b in release_builds(sb, MISSED)}
    print(f"\nreleases of {MISSED} started by: {sorted(started_by)}")
    # Once published, the timer leaves it alone: only its aarch64 build is missing, and it waits for a worker.
    last = [line for line in sb.build_logs(after[-1]["buildid"])["recheck/recheck"].splitlines() if MISSED in line]
    assert len(last) == 1 and f"{MISSED} (v{MISSED}) vllm-cpu aarch64: not in the index; waiting for an " \
        "aarch64 worker since" in last[0], last


def test_recheck_skips_published_and_rc(restarted: dict) -> None:
    sb: Sandbox = restarted["sb"]
    for b in recheck_builds(sb):
        log = sb.build_logs(b["buildid"])["recheck/recheck"]
        assert PUBLISHED not in log and RC not in log, log
    # The rc: no release at all; the published one: no variant build, none from the re-check.
    assert release_builds(sb, RC) == []
    assert variant_builds(sb, PUBLISHED) == []
    assert not [b for b in release_builds(sb, PUBLISHED) if props(b).get("recheck")]
    assert {r["name"] for r in sb.api("builders")} >= {RELEASE, RECHECK}


def test_second_request_for_a_release_in_planning_does_nothing(restarted: dict) -> None:
    """Two identical requests a moment apart (as poller and re-check at a restart): the newer one waits for nothing."""
    sb: Sandbox = restarted["sb"]
    before = max(b["buildid"] for b in sb.release_builds())
    params = {"versions": PUBLISHED, "variants": ["vllm-cpu"], "arches": ["x86_64"], "reason": "twice"}
    assert sb.force(**params).status_code == 200
    assert sb.force(**params).status_code == 200
    sb.until(lambda: sum(b["complete"] for b in sb.release_builds() if b["buildid"] > before) == 2, 60,
              "both releases")
    first, second = sorted((b for b in sb.release_builds() if b["buildid"] > before), key=lambda b: b["buildid"])
    steps = {s["name"]: s for s in sb.api(f"builds/{second['buildid']}/steps")}
    assert f"duplicate of build request {first['buildrequestid']}" in steps["duplicate_check"]["state_string"]
    assert steps["checkout_tag"]["results"] == 3 and steps["fan_out"]["results"] == 3  # SKIPPED
    assert second["results"] == 0
    first_steps = {s["name"]: s for s in sb.api(f"builds/{first['buildid']}/steps")}
    assert "already published" in first_steps["already_published"]["state_string"]
