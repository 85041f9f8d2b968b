"""The rebuild's worker slots on a real (in-process) Buildbot master: never a deadlock, the other worker.

Two workers with ``master/reproduce.py``'s ``max_builds`` and slot lock, a
"variant" builder that holds a slot and waits for a triggered "reproduce"
build (as ``steps.reproduce.ReproduceWheels`` does), and the reproduce
builder with ``next_worker``.  Two variant builds at once fill both
workers' build slots: each rebuild still starts (the extra slot), on the
worker its variant build did not use.  The real builds are
tests/e2e/test_reproduce_e2e.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from buildbot.config import BuilderConfig
from buildbot.plugins import schedulers, steps, util
from buildbot.process.factory import BuildFactory
from buildbot.test.util.integration import RunMasterBase
from buildbot.worker.local import LocalWorker
from twisted.internet import defer, reactor, task

from farm import settings
from master import reproduce
from workers.registry import WorkerEntry

ENTRIES = [WorkerEntry("w1", "x86_64", 1, "t"), WorkerEntry("w2", "x86_64", 1, "t")]


@util.renderer
def _first(props):
    return {"builder": "variant", "number": props.getProperty("buildnumber"), "worker": props.getProperty("workername")}


class RebuildSlots(RunMasterBase):
    timeout = 120

    def mktemp(self) -> str:
        d = tempfile.mkdtemp(prefix="vllm-cpu-slots-")
        self.addCleanup(shutil.rmtree, d, True)
        return str(Path(d) / "master")

    @defer.inlineCallbacks
    def test_two_variant_builds_each_get_a_rebuild_on_the_other_worker(self):
        on = settings.replace(settings.Settings(), build=settings.Build(reproduce=True))
        base = Path(tempfile.mkdtemp(prefix="vllm-cpu-slots-w-"))
        self.addCleanup(shutil.rmtree, str(base), True)
        variant = BuildFactory([steps.ShellCommand(command=["sleep", "1"]),
                                steps.Trigger(schedulerNames=["rebuild"], waitForFinish=True,
                                              set_properties={"reproduce_of": _first})])
        rebuild = BuildFactory([steps.ShellCommand(command=["sleep", "2"])])
        names = [e.name for e in ENTRIES]
        yield self.setup_master({
            "workers": [LocalWorker(e.name, str(base / e.name), max_builds=reproduce.max_builds(e, True),
                                  missing_timeout=0)
                        for e in ENTRIES],
            "protocols": {"null": {}},
            "builders": [
                BuilderConfig(name="variant", workernames=names, factory=variant, collapseRequests=False,
                              locks=reproduce.slot_locks(on, ENTRIES)),
                BuilderConfig(name="reproduce", workernames=names, factory=rebuild, collapseRequests=False,
                              nextWorker=reproduce.next_worker),
            ],
            "schedulers": [schedulers.ForceScheduler(name="force", builderNames=["variant"]),
                           schedulers.Triggerable(name="rebuild", builderNames=["reproduce"])],
        }, startWorker=False)
        for _ in range(2):
            yield self.master.data.control("force", {"builderid": None}, ("forceschedulers", "force"))
        builds: list = []
        for _ in range(200):  # a deadlock would never finish: 100 s
            builds = yield self.master.data.get(("builds",))
            if len(builds) == 4 and all(b["complete"] for b in builds):
                break
            yield task.deferLater(reactor, 0.5, lambda: None)
        assert len(builds) == 4 and all(b["complete"] and b["results"] == 0 for b in builds), builds
        workers = {w["workerid"]: w["name"] for w in (yield self.master.data.get(("workers",)))}
        builders = {b["builderid"]: b["name"] for b in (yield self.master.data.get(("builders",)))}
        firsts = {b["number"]: workers[b["workerid"]] for b in builds if builders[b["builderid"]] == "variant"}
        assert sorted(firsts.values()) == ["w1", "w2"]  # one variant build per worker: the slot lock
        for b in (b for b in builds if builders[b["builderid"]] == "reproduce"):
            props = yield self.master.data.get(("builds", b["buildid"], "properties"))
            of = props["reproduce_of"][0]
            assert workers[b["workerid"]] != firsts[of["number"]] == of["worker"], (of, b)
