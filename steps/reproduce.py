"""Reproducible wheels (``[build] reproduce = true``): rebuild, compare on the master, then publish.

A variant build, after its wheels passed verify and smoke and were handed
to the master, runs ``ReproduceWheels``: it triggers the arch's
``reproduce-<arch>`` builder (``master/reproduce.py``: another worker of
the arch when one is free) and waits.  That build checks out the same tag,
patches and builds the same wheels in its own, fresh directory with no
cached compile (``RebuildWheel``), hands them to the master (``FetchRebuilt``) and
``CompareRebuilt`` hashes the received bytes on the master against the
sha256 the first build recorded (the one ``upload`` holds the published
bytes to); on a mismatch the master's own ``vllm-cpu-build compare`` says
which members (and ELF sections) differ (``farm.rebuild``).  Neither
build of the pair ever gets a publishing credential.  A mismatch fails
the variant build before ``upload``: nothing is published.  A match puts
the rebuild's sha256 into the wheel's provenance (``provenance`` property,
the GitHub release notes) and the build's summary.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from buildbot.process import buildstep
from buildbot.steps.trigger import Trigger
from twisted.internet import defer, threads

from farm import handover, rebuild
from farm.report import flatten
from farm.states import CANCELLED, FAILURE, SKIPPED, SUCCESS, WARNINGS
from steps.attached import Attached
from steps.publisher import FetchWheels, _Custody
from steps.summary import BuildSummary, OwnTriggerSummary
from steps.toolchain import BuildWheel, QueueWheelBuilds, toolchain_env

# What the reproduce build needs of the variant build to make the same wheels.
REPRODUCE_PROPS = ["variant", "arch", "tag", "version", "postfix", "dry_run", "skip_upload", "pythons", "abi3",
                   "abi3_floor"]


class RebuildWheel(BuildWheel):
    """``build`` again, every unit compiled anew; the wheel is compared, not checked again (no verify, no smoke).

    ``CCACHE_RECACHE`` rather than ``CCACHE_DISABLE``: ccache uses no stored result but still
    hands the compiler the tree-relative paths (``CCACHE_BASEDIR``) the first build's compiles
    had, which the farm's shared cache needs for hits across checkout directories.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("env", {**toolchain_env(), "CCACHE_RECACHE": "1"})
        kwargs["cache"] = None  # nothing from, or for, the farm's shared cache
        super().__init__(**kwargs)

    def checks(self, wheel: str) -> list[buildstep.BuildStep]:
        return []


class QueueRebuilds(QueueWheelBuilds):
    wheel_step = RebuildWheel


class FetchRebuilt(FetchWheels):
    """The rebuilt wheels into this build's custody directory on the master, also in a dry run."""

    name = "fetch_rebuilt"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(package="", **kwargs)

    def run(self) -> defer.Deferred[int]:
        self.package = str(self.getProperty("variant") or "")
        return self._fetch()


class CompareRebuilt(BuildSummary, _Custody, buildstep.BuildStep):
    """On the master: the rebuilt bytes against the sha256 the first build recorded; ``reproduced``."""

    name = "compare"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("haltOnFailure", True)
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        expected = self.getProperty("expected_sha256")
        of = self.getProperty("reproduce_of") or {}
        mine = self.custody_path()
        try:
            if not isinstance(expected, dict) or not expected:
                self.descriptionDone = "nothing to compare: the first build's sha256 were not passed on"
                return FAILURE
            try:
                original = handover.custody_dir(self.master.basedir, str(of.get("builder")), int(of["number"]))
            except (KeyError, TypeError, ValueError):
                original = None
            lines: list[str] = []
            outcomes = yield threads.deferToThread(
                rebuild.check, {str(k): str(v) for k, v in expected.items()}, mine, original, log=lines.append)
        finally:
            yield threads.deferToThread(handover.discard, mine)
        self.setProperty("reproduced", {o.wheel: o.to_json() for o in outcomes}, self.name)
        report = [o.line() for o in outcomes]
        yield self.addCompleteLog("compare", "\n".join(report) + "\n\n" + "".join(lines))
        bad = [o for o in outcomes if not o.identical]
        self.descriptionDone = ("; ".join(o.line() for o in bad) if bad else
                                f"{len(outcomes)} wheel(s): same bytes as the first build")[:400]
        self.build_summary = "NOT reproducible" if bad else "[same bytes]"
        return FAILURE if bad else SUCCESS


class ReproduceWheels(BuildSummary, OwnTriggerSummary, Attached, Trigger):
    """In a variant build before ``upload``: rebuild its wheels elsewhere and wait; fail unless identical."""

    name = "reproduce"

    def __init__(self, scheduler: str, **kwargs: Any) -> None:
        kwargs.setdefault("haltOnFailure", True)
        self.scheduler = scheduler
        super().__init__(schedulerNames=[scheduler], waitForFinish=True, **kwargs)

    def getSchedulersAndProperties(self) -> list[dict[str, Any]]:
        props = {p: self.getProperty(p) for p in REPRODUCE_PROPS if self.getProperty(p) is not None}
        props["expected_sha256"] = dict(self.getProperty("built") or {})
        props["reproduce_of"] = {"builder": self.build.builder.name, "number": self.build.number,
                                 "worker": self.build.getWorkerName()}
        return [{"sched_name": self.scheduler, "props_to_set": props, "unimportant": False}]

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        if not self.getProperty("built"):
            self.descriptionDone = "no wheel to rebuild"
            return SKIPPED
        results = yield super().run()
        if results == CANCELLED:
            return CANCELLED
        rebuilt = yield self._rebuilt()
        verdict: int = yield self._verdict(results, *rebuilt)
        if verdict != SUCCESS:
            # No upload follows a failed step: the wheels handed to the master go now.
            yield threads.deferToThread(handover.discard, handover.custody_dir(
                self.master.basedir, str(self.build.builder.name), int(self.build.number or 0)))
        return verdict

    @defer.inlineCallbacks
    def _rebuilt(self) -> Generator[Any, Any, tuple[dict[str, Any], str, str]]:
        """(``reproduced`` of the reproduce build, its worker, its URL) of the newest build of our request."""
        for brid in self.brids:
            builds = yield self.master.data.get(("buildrequests", brid, "builds"))
            if not builds:
                continue
            b = max(builds, key=lambda x: x["buildid"])
            props = flatten((yield self.master.data.get(("builds", b["buildid"], "properties"))))
            worker = yield self.master.data.get(("workers", b["workerid"]))
            url = f"{self.master.config.buildbotURL}#/builders/{b['builderid']}/builds/{b['number']}"
            return dict(props.get("reproduced") or {}), (worker or {}).get("name", ""), url
        return {}, "", ""

    @defer.inlineCallbacks
    def _verdict(self, results: int, reproduced: dict[str, Any], worker: str,
                 url: str) -> Generator[Any, Any, int]:
        built = dict(self.getProperty("built") or {})
        where = f"rebuilt on {worker}" if worker else "rebuild"
        # Only what the master's compare step found, and only for the very sha256 this build recorded.
        same = {n: r for n, r in reproduced.items() if isinstance(r, dict) and r.get("identical")
                and r.get("sha256") == {"a": built.get(n), "b": built.get(n)}}
        yield self.addCompleteLog("reproduce", json.dumps({"worker": worker, "build": url, "wheels": reproduced},
                                                          indent=2, sort_keys=True))
        if results in (SUCCESS, WARNINGS) and built and set(same) >= set(built):
            # The master hashed the rebuilt bytes: they are the bytes the first build recorded.
            records = dict(self.getProperty("provenance") or {})
            for name in built:
                records[name] = {**records.get(name, {}), "rebuild_sha256": same[name]["sha256"]["b"],
                                 "rebuild_worker": worker}
            self.setProperty("provenance", records, self.name)
            self.setProperty("rebuild", {n: {"sha256": same[n]["sha256"]["b"], "worker": worker, "build": url}
                                         for n in built}, self.name)
            self.descriptionDone = f"{where}: same bytes, sha256 " + ", ".join(built[n] for n in sorted(built))
            self.build_summary = f"[reproduced on {worker or '?'}: same sha256]"
            return SUCCESS
        lines = [rebuild.Outcome.from_json(r).line() for _, r in sorted(reproduced.items())
                 if isinstance(r, dict) and not r.get("identical")]
        why = "; ".join(lines) or f"the rebuild did not finish ({url or 'no build'})"
        self.descriptionDone = f"NOT reproducible, nothing published: {why}"[:500]
        members = sorted({d.member + (f" ({', '.join(d.sections)})" if d.sections else "")
                          for r in reproduced.values() if isinstance(r, dict) and not r.get("identical")
                          for d in rebuild.Outcome.from_json(r).differences})
        self.build_summary = ("NOT reproducible, nothing published: "
                              + (f"differs: {', '.join(members)}" if members else why))[:300]
        return FAILURE


__all__ = ["CompareRebuilt", "FetchRebuilt", "REPRODUCE_PROPS", "QueueRebuilds", "RebuildWheel", "ReproduceWheels"]
