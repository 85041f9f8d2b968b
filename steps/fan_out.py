"""``FanOut``: trigger one variant × arch build per ``todo`` entry; the release's result is theirs.

Triggering is Buildbot's own ``Trigger`` (its schedulers, source stamps,
properties and a link per build request); what is ours is the waiting: it
never waits on an arch without a worker, says what its builds are doing,
cancels them when the release is stopped and links every build.  The rules
(when the release is done, what to cancel, its result) are
``farm.decisions``; this step reads the builds and applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from buildbot.process import buildstep
from buildbot.reporters import utils as rutils
from buildbot.steps.trigger import Trigger
from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from farm import packing
from farm.decisions import release_result, settle
from farm.report import child_of, child_row, fetch_children, format_table, release_summary
from farm.states import Result
from steps.attached import Attached
from steps.summary import BuildSummary, OwnTriggerSummary

_log = Logger()
TABLE = ("variant", "arch", "wheel", "isa", "verify", "smoke", "floor", "uploaded", "result", "since")


class FanOut(Attached, BuildSummary, OwnTriggerSummary, Trigger):
    """Trigger one variant × arch build per ``todo`` entry; the release's result is theirs.

    It waits for the builds that can run, never for a worker that is not
    there: once every build has finished or waits for an arch no connected
    worker serves, the release ends (WARNINGS, "waiting for an aarch64
    worker since ..."), so it holds no release slot while it waits.  The
    queued request stays; when a worker comes, it builds and is announced
    on its own (``master/notify.py``).  A master restart re-runs the
    release, which then waits for the builds its earlier try started
    (``report.children``).  Stopping the release cancels its builds and
    waits (a bounded time) for them to end, so its table is their state.
    """

    name = "fan_out"

    def __init__(self, scheduler_for: Callable[[str, str], str], common_props: list[str],
                 builder_for: Callable[[str, str], str] | None = None, poll_interval: float = 5.0,
                 cancel_timeout: float = 300.0, reconnect_grace: float = 300.0,
                 **kwargs: Any) -> None:
        self.scheduler_for = scheduler_for  # (variant, arch) -> Triggerable name
        self.common_props = common_props  # properties copied from the release build
        # (variant, arch) -> builder name: triggers the builds longest expected first (farm.packing)
        self.builder_for = builder_for
        self._todo: list[dict[str, Any]] | None = None  # ``todo`` in the order to trigger
        self.poll_interval = poll_interval  # seconds between looks at the builds (also woken by finished builds)
        self.cancel_timeout = cancel_timeout  # after a stop, how long cancelled builds may take to end
        # A build interrupted by a master restart (or a lost worker) is queued again, and its
        # worker needs a while to reconnect (buildbot-worker backs off up to 300 s): until then
        # it is not "waiting for a worker that is not there".
        self.reconnect_grace = reconnect_grace
        kwargs["waitForFinish"] = False  # waiting is ours: never for a worker that is not there
        kwargs.setdefault("alwaysUseLatest", True)
        kwargs.setdefault("warnOnWarnings", True)
        super().__init__(**kwargs)
        self._wakeup: Wakeup | None = None  # made at run time: it needs the master's reactor
        self._stop_reason: str | None = None
        self._lost = False
        self._rows: list[dict[str, Any]] = []
        self._linked: set[str] = set()
        self._cancelled: set[int] = set()

    def getCurrentSummary(self) -> dict[str, str]:
        if self._rows:
            return {"step": f"{self.getProperty('version')}: {release_summary(self._rows)}"}
        return {"step": "triggering variant builds"}

    def getSchedulersAndProperties(self) -> list[dict[str, Any]]:
        """Trigger's hook: one request per ``todo`` entry, with the release's ``common_props``."""
        out = []
        common = {p: self.getProperty(p) for p in self.common_props if self.getProperty(p) is not None}
        for b in self._todo if self._todo is not None else self.getProperty("todo") or []:
            props = {**common, "variant": b["variant"], "arch": b["arch"], "pythons": list(b.get("pythons", [])),
                     "abi3": bool(b.get("abi3"))}
            if b.get("abi3_floor"):  # from this Python on one stable-ABI wheel, below it one wheel each
                props["abi3_floor"] = str(b["abi3_floor"])
            out.append({"sched_name": self.scheduler_for(b["variant"], b["arch"]), "props_to_set": props,
                        "unimportant": False})
        return out

    def addURL(self, name: str, url: str) -> Any:
        """Each URL once: Trigger links the requests it made, ``_link`` the others and every build."""
        self._linked.add(url)
        return super().addURL(name, url)

    def interrupt(self, reason: str | Failure) -> Any:
        if isinstance(reason, Failure) or getattr(self.master.botmaster, "shuttingDown", False):
            # The master is stopping (Buildbot stops its builds with RETRY, or
            # the in-process worker went away): the release is re-run after
            # the restart; its builds are left alone, to go on then.
            self._lost = True
        elif self._stop_reason is None:
            self._stop_reason = str(reason) or "stopped"
        self.ended = True  # Trigger's own loop triggers nothing more
        if self._wakeup is not None:
            self._wakeup.poke()
        return buildstep.BuildStep.interrupt(self, reason)

    async def run(self) -> int:
        if self.getProperty("todo"):
            self._todo = await self._longest_first(list(self.getProperty("todo")))
            triggered = await super().run()  # Buildbot's Trigger: the requests, each linked; not waited for
            if triggered == Result.EXCEPTION:
                self.descriptionDone = "could not trigger the variant builds"
                return Result.EXCEPTION
        wakeup = self._wakeup = Wakeup(self.master.reactor)
        consumer = await self.master.mq.startConsuming(lambda *_: wakeup.poke(), ("builds", None, "finished"))
        try:
            kids = await self._settle(wakeup)
        finally:
            await defer.maybeDeferred(consumer.stopConsuming)  # a Deferred or None
        return await self._verdict(kids)

    async def _longest_first(self, todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``todo`` with the longest expected build first: the first builds triggered take the free
        workers before Buildbot's ``prioritizeBuilders`` ever sorts (``farm.packing``)."""
        if self.builder_for is None:
            return todo
        names = [self.builder_for(b["variant"], b["arch"]) for b in todo]
        try:
            cost = packing.costs(await packing.expected_by_name(self.master, names))
        except Exception:  # a busy database: Buildbot's order is still a release
            _log.failure("fan_out: reading build durations", level=LogLevel.warn)
            return todo
        order = sorted(range(len(todo)), key=lambda i: -cost[names[i]])
        return [todo[i] for i in order]

    async def _verdict(self, kids: list[dict[str, Any]]) -> int:
        """The release's table, ``waiting`` property, summary and result from its builds."""
        version = self.getProperty("version")
        if self._lost:
            self.descriptionDone = "interrupted: the master is stopping; the release goes on after its restart"
            return Result.RETRY
        rows = [child_row(k) for k in kids]
        if not rows:
            self.descriptionDone = "nothing to build"
            return Result.SKIPPED
        self._rows = rows
        await self.addCompleteLog("release", format_table(rows, TABLE))
        self.setProperty("waiting", [{"variant": r["variant"], "arch": r["arch"], "since": r["since"],
                                      "buildrequestid": k["buildrequestid"]}
                                     for r, k in zip(rows, kids, strict=True) if r["waiting"]], self.name)
        text = release_summary(rows)
        if self._stop_reason is not None:
            self.descriptionDone = f"{version} stopped: {text}"
            self.build_summary = f"vLLM {version} stopped: {text}"
            return Result.CANCELLED
        self.descriptionDone = f"{version}: {text}"
        self.build_summary = f"vLLM {version}: {text}"
        return release_result(child_of(k) for k in kids)

    async def _settle(self, wakeup: Wakeup) -> list[dict[str, Any]]:
        """Look at the release's builds until ``farm.decisions.settle`` says the release is done."""
        deadline = None
        kids: list[dict[str, Any]] = []
        buildid = self.build.buildid
        assert buildid is not None, "a running build has its id"
        rerun_since = await self._rerun_since()
        while not self._lost:
            try:
                kids = await fetch_children(self.master, buildid)
            except Exception:  # a busy database: look again at the next poll
                _log.failure("fan_out: reading the variant builds", level=LogLevel.error)
            else:
                await self._link(kids)
                self._rows = [child_row(k) for k in kids]
                self.updateSummary()
                if self._lost:
                    break
                verdict = settle([child_of(k) for k in kids], now=self.master.reactor.seconds(),
                                 reconnect_grace=self.reconnect_grace, stopped=self._stop_reason is not None,
                                 cancelled=self._cancelled, deadline=deadline, cancel_timeout=self.cancel_timeout,
                                 rerun_since=rerun_since)
                self._cancel(verdict.cancel)
                deadline = verdict.deadline
                if verdict.done:
                    break
            if not self._lost:
                await wakeup.sleep(self.poll_interval)
        return kids

    async def _rerun_since(self) -> float | None:
        """Now, when this release's request had an earlier try (a master restart re-ran it): its
        workers may still be reconnecting (``farm.decisions.reconnecting``); else None."""
        requests = getattr(self.build, "requests", None)
        if not requests:
            return None
        try:
            tries = await self.master.data.get(("buildrequests", requests[0].id, "builds"))
        except Exception:  # a busy database: assume a re-run, the grace only makes the release wait longer
            _log.failure("fan_out: reading the release's earlier tries", level=LogLevel.warn)
            return float(self.master.reactor.seconds())
        if any(b["buildid"] < (self.build.buildid or 0) for b in tries or []):
            return float(self.master.reactor.seconds())
        return None

    def _cancel(self, brids: Iterable[int]) -> None:
        """Cancel build requests of this release (queued: dropped; running: stopped)."""
        for brid in brids:
            self._cancelled.add(brid)
            self.master.data.control("cancel", {"reason": f"release stopped: {self._stop_reason}"},
                                     ("buildrequests", brid))

    async def _link(self, kids: list[dict[str, Any]]) -> None:
        """Link each build request and build on the step, so the UI counts what is really pending."""
        for k in kids:
            links = [(f"{k['builder']} request {k['buildrequestid']}",
                      rutils.getURLForBuildrequest(self.master, k["buildrequestid"]))]
            if "number" in k:
                links.append((f"{k['builder']} #{k['number']}",
                              rutils.getURLForBuild(self.master, k["builderid"], k["number"])))
            for name, url in links:
                if url not in self._linked:
                    await self.addURL(name, url)


class Wakeup:
    """A sleep that ends early when poked: a build of the release finished, or the release was stopped."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._wake: defer.Deferred[None] | None = None

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._wake = d
        call = self.reactor.callLater(seconds, self.poke)

        def done(result: None) -> None:
            if call.active():
                call.cancel()
            return result

        return d.addBoth(done)

    def poke(self) -> None:
        d, self._wake = self._wake, None
        if d is not None and not d.called:
            d.callback(None)
