"""Longest build first (``farm/packing.py``), under Buildbot's step harness (fake database, fake clock).

The release triggers its builds, and a free worker takes a queued build,
in the order of their expected duration, longest first; the estimate is
each builder's own successful builds in the database, nothing named.
"""

from __future__ import annotations

from unittest import mock

from buildbot.process.builder import Builder
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from buildbot.test import fakedb
from twisted.internet import defer

from farm import packing
from steps import release
from tests.unit.test_release_steps import MASTER, SUBMITTED, ReleaseCase, Triggerable

BUILDERS = {170: "a-x86_64", 171: "b-x86_64", 172: "c-x86_64", 173: "d-x86_64"}
ID = {name.split("-")[0]: bid for bid, name in BUILDERS.items()}


class PackingCase(ReleaseCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.master.db.insert_test_data([fakedb.Builder(id=i, name=n) for i, n in BUILDERS.items()])
        # a: short (a failed build ran long: failures do not count); b: long; c, d: never built.
        yield self.history(ID["a"], 10, 12, 11)
        yield self.history(ID["a"], 9999, results=FAILURE)
        yield self.history(ID["b"], 300, 280)

    @defer.inlineCallbacks
    def history(self, builderid: int, *seconds: int, results: int = SUCCESS):
        for s in seconds:
            bsid, brid, bid = next(self._ids), next(self._ids), next(self._ids)
            start = SUBMITTED - 10_000
            yield self.master.db.insert_test_data([
                fakedb.Buildset(id=bsid), fakedb.SourceStamp(id=bsid),
                fakedb.BuildsetSourceStamp(buildsetid=bsid, sourcestampid=bsid),
                fakedb.BuildRequest(id=brid, buildsetid=bsid, builderid=builderid, complete=1, results=results,
                                    submitted_at=start),
                fakedb.Build(id=bid, buildrequestid=brid, builderid=builderid, masterid=MASTER, workerid=13,
                             results=results, started_at=start, complete_at=start + s)])

    @defer.inlineCallbacks
    def queue(self, builderid: int, priority: int = 0, submitted_at: int = SUBMITTED):
        bsid, brid = next(self._ids), next(self._ids)
        yield self.master.db.insert_test_data([
            fakedb.Buildset(id=bsid), fakedb.SourceStamp(id=bsid),
            fakedb.BuildsetSourceStamp(buildsetid=bsid, sourcestampid=bsid),
            fakedb.BuildRequest(id=brid, buildsetid=bsid, builderid=builderid, priority=priority,
                                submitted_at=submitted_at)])


class TestExpected(PackingCase):
    @defer.inlineCallbacks
    def test_median_of_successful_builds_and_none_without_history(self):
        expected = yield defer.ensureDeferred(packing.expected_by_name(self.master, ["a-x86_64", "b-x86_64",
                                                                                     "c-x86_64", "nope"]))
        assert expected == {"a-x86_64": 11, "b-x86_64": 290, "c-x86_64": None, "nope": None}
        assert packing.costs(expected) == {"a-x86_64": 11, "b-x86_64": 290, "c-x86_64": 290, "nope": 290}
        assert packing.costs({"x": None}) == {"x": 0.0}


class TestFanOutOrder(PackingCase):
    @defer.inlineCallbacks
    def test_the_release_triggers_the_longest_expected_build_first(self):
        scheds = {v: Triggerable(self, f"build-{v}-x86_64", ID[v]) for v in "abc"}
        self.master.scheduler_manager = mock.Mock(namedServices={s.name: s for s in scheds.values()})
        self.master.mq.waitUntilEvent = lambda *a, **kw: defer.Deferred()  # Trigger's own result watch: unused
        calls: list[str] = []
        for v, s in scheds.items():
            trigger = s.trigger
            s.trigger = lambda *a, _v=v, _t=trigger, **kw: (calls.append(_v), _t(*a, **kw))[1]
        step = self.setup_step(release.FanOut(schedulerNames=sorted(s.name for s in scheds.values()),
                                              scheduler_for=lambda v, a: f"build-{v}-{a}",
                                              builder_for=lambda v, a: f"{v}-{a}",
                                              common_props=["version"], poll_interval=5))
        todo = [{"variant": v, "arch": "x86_64", "pythons": [], "abi3": True} for v in "abc"]  # as plan lists them
        for k, v in {"version": "0.11.2", "todo": todo}.items():
            self.build.setProperty(k, v, "test")
        # No worker serves these builders: the release ends at once, its requests queued.
        self.expect_outcome(WARNINGS, "0.11.2: 0 of 3 variant builds ok, 3 waiting for an x86_64 worker since "
                                      "2027-01-15 08:00 UTC (warnings)")
        yield self.run_step()
        # b ran ~290 s before; c never ran (cost unknown: not assumed cheap); a ~11 s.
        assert calls == ["b", "c", "a"]
        assert [r["builderid"] for r in (yield self.master.data.get(("buildrequests",)))
                if r["buildrequestid"] in step.brids] == [ID["b"], ID["c"], ID["a"]]

    @defer.inlineCallbacks
    def test_without_builder_names_the_plan_order_stays(self):
        step = release.FanOut(schedulerNames=["x"], scheduler_for=lambda v, a: "x", common_props=[])
        todo = [{"variant": v, "arch": "x86_64"} for v in "abc"]
        got = yield defer.ensureDeferred(step._longest_first(todo))
        assert got == todo


class TestPrioritizeBuilders(PackingCase):
    """Buildbot's ``prioritizeBuilders``: the first builder in its answer gets the free worker."""

    def builders(self) -> list[Builder]:
        out = []
        for name in sorted(BUILDERS.values()):  # Buildbot's own tie-break: by name
            b = Builder(name)
            b.master = self.master
            out.append(b)
        return out

    @defer.inlineCallbacks
    def order(self) -> defer.Deferred[list[str]]:
        got = yield packing.prioritize_builders(self.master, self.builders())
        return [b.name.split("-")[0] for b in got]

    @defer.inlineCallbacks
    def test_a_free_worker_takes_the_longest_expected_build(self):
        for v in "abc":  # one release: queued in the same second
            yield self.queue(ID[v])
        # d has nothing queued: last, whatever it would cost.
        assert (yield self.order()) == ["b", "c", "a", "d"]

    @defer.inlineCallbacks
    def test_request_priority_first_then_duration_then_age(self):
        yield self.queue(ID["a"], priority=5)  # a maintainer raised it: it goes first
        yield self.queue(ID["b"], submitted_at=SUBMITTED + 60)
        yield self.queue(ID["c"])
        yield self.queue(ID["d"])
        # c and d: no history, both as long as b (the longest known); the older request first among equals.
        assert (yield self.order()) == ["a", "c", "d", "b"]
