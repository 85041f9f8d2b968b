"""``Recheck``: the periodic re-check; a release for every release tag with a build the index lacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.config.errors import error as config_error
from buildbot.steps.trigger import Trigger
from twisted.internet import threads

from farm.custody import Ledger
from farm.decisions import (
    History,
    RecheckPlan,
    ReleaseStart,
    failed_attempts,
    pending,
    plan_recheck,
    release_history,
)
from farm.published import MissingBuild, build_key
from farm.states import FAILED_ATTEMPT, Result
from steps import custody
from steps.attached import Attached
from steps.collect import finished_builds, open_requests
from steps.summary import OwnTriggerSummary

# ({version: planned builds}, the custody ledger) -> what the index lacks of this farm's output; blocking
FindMissing = Callable[[dict[str, list[dict[str, Any]]], Ledger], list[MissingBuild]]


class Recheck(Attached, OwnTriggerSummary, Trigger):
    """Periodic re-check: rebuild every applicable build of a release tag that the index lacks.

    ``find_missing`` (blocking) lists the (version, variant, arch, Python)
    builds the index lacks, using the plans of earlier releases where there
    are any.  A missing build already queued (or waiting for a worker of its
    arch) is left to that request; one that failed ``max_attempts`` times is
    left to a maintainer ("rebuild" the release or force one): retrying a
    broken build every interval would only burn worker time and mail the
    same failure again.  For every other version a release starts; it
    builds what is missing (``already_published``) except ``skip_builds``.
    The rules are ``farm.decisions.plan_recheck``; this step reads the
    builds and requests they need and triggers the releases.
    """

    name = "recheck"

    def __init__(self, find_missing: FindMissing, release_builder: str, builder_for: Callable[[str, str], str],
                 max_attempts: int = 3, history: int = 500, **kwargs: Any) -> None:
        if max_attempts < 1:
            config_error(f"Recheck: max_attempts must be at least 1, not {max_attempts}")
        self.find_missing = find_missing  # blocking: {version: planned builds} -> what the index lacks
        self.release_builder = release_builder
        self.builder_for = builder_for  # (variant, arch) -> builder name
        self.max_attempts = max_attempts
        self.history = history  # newest release builds read for plans and failures
        kwargs.setdefault("waitForFinish", False)
        kwargs.setdefault("alwaysUseLatest", True)
        kwargs.setdefault("warnOnWarnings", True)
        super().__init__(**kwargs)
        self._starts: tuple[ReleaseStart, ...] = ()

    async def run(self) -> int:
        try:
            history = release_history(await finished_builds(self.master, self.release_builder,
                                                            limit=self.history))
            missing = await threads.deferToThread(self.find_missing, history.plans, custody.blocking(self.master))
        except Exception as exc:
            self.descriptionDone = f"re-check failed: {exc}"[:200]
            return Result.FAILURE
        plan = await self._plan(missing, history)
        self._starts = plan.starts
        await self.addCompleteLog("recheck", plan.log)
        self.descriptionDone = plan.summary
        result = Result.SUCCESS
        if plan.starts:
            result = await super().run()  # Buildbot's Trigger: one release per version, not waited for
        if result not in (Result.SUCCESS, Result.CANCELLED):
            return int(result)
        return plan.result

    async def _plan(self, missing: list[MissingBuild], history: History) -> RecheckPlan:
        """Read what the decision needs about the missing builds (their requests, their failures) and decide."""
        busy: set[str] = set()
        failures: dict[tuple[str, str], int] = {}
        waiting: dict[MissingBuild, str | None] = {}
        if missing:
            # Versions with a release not finished yet (planning): never start one twice.
            busy = {str(r.props["version"]) for r in await open_requests(self.master, self.release_builder)
                    if "version" in r.props}
            past, requests = {}, {}
            for variant, arch in sorted({(m.variant, m.arch) for m in missing}):
                builder = self.builder_for(variant, arch)
                past[build_key(variant, arch)] = await finished_builds(self.master, builder,
                                                                       results=sorted(FAILED_ATTEMPT))
                requests[build_key(variant, arch)] = await open_requests(self.master, builder, workers=True)
            failures = failed_attempts(past, {m.version for m in missing})
            waiting = {m: pending(m, requests[m.key]) for m in missing}
        return plan_recheck(missing, busy=busy, pending=waiting, failures=failures,
                            failed_releases=history.failed_releases, max_attempts=self.max_attempts)

    def getSchedulersAndProperties(self) -> list[dict[str, Any]]:
        """Trigger's hook: one release per version to start."""
        return [{"sched_name": self.schedulerNames[0], "props_to_set": s.properties(), "unimportant": False}
                for s in self._starts]
