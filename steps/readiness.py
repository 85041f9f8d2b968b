"""The steps of a readiness build (``farm/readiness.py``): what it builds, and its plan.

``ResolveReadiness`` runs on the master before anything else: it lists the
upstream's tags, picks the ref and the version of its target, and sets
every property the toolchain steps read (variant, arch, the ref as ``tag``,
``version``) plus ``dry_run``: a readiness build never uploads, whatever a
request said (its factory has no upload step either).  ``PlanReadiness`` is
``plan`` for that one build: the Pythons and abi3 of the wheel to build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.process import buildstep
from twisted.internet import threads

from farm import readiness
from farm.states import FAILURE, SKIPPED, SUCCESS, Result
from steps.summary import BuildSummary
from steps.toolchain import PlanRelease
from vllm_cpu_build.results import PlanResult


class ResolveReadiness(BuildSummary, buildstep.BuildStep):
    """Pick the ref and version of this builder's target from the upstream's tags; skip when there is none."""

    name = "readiness"

    def __init__(self, target: str, branch: str, list_tags: Callable[[], dict[str, str]], **kwargs: Any) -> None:
        self.target = target
        self.branch = branch
        self.list_tags = list_tags  # version -> tag, pre-releases included (blocking: git ls-remote)
        kwargs.setdefault("haltOnFailure", True)
        super().__init__(**kwargs)

    async def run(self) -> int:
        try:
            releases = await threads.deferToThread(self.list_tags)
        except Exception as exc:
            self.descriptionDone = f"cannot list upstream tags: {exc}"[:200]
            return FAILURE
        chosen = readiness.resolve(self.target, releases, self.branch)
        if isinstance(chosen, readiness.Nothing):
            self.descriptionDone = self.build_summary = f"nothing to check: {chosen.why}"
            return SKIPPED
        for name, value in (("readiness", chosen.to_json()), ("tag", chosen.ref), ("version", chosen.version),
                            ("variant", readiness.PACKAGE), ("arch", readiness.ARCH), ("dry_run", True)):
            self.setProperty(name, value, "readiness")
        self.descriptionDone = f"{chosen.ref} as {chosen.why}"[:250]
        self.build_summary = f"{readiness.title({'readiness': chosen.to_json()})} (dry run, never uploaded)"
        await self.addCompleteLog("why", f"ref: {chosen.ref}\nversion: {chosen.why}\n"
                                         "A readiness build never uploads (dry run forced by the master).\n")
        return SUCCESS


def resolved(step: buildstep.BuildStep) -> bool:
    """``doStepIf`` of every later step: the build has a target (else it checked nothing, visibly)."""
    return bool(step.getProperty("readiness"))


class PlanReadiness(PlanRelease):
    """``plan`` of the one readiness build: sets ``pythons``, ``abi3``, ``abi3_floor`` as a release's fan-out would."""

    def interpret(self, rc: int, plan: PlanResult) -> int:
        result = super().interpret(rc, plan)
        if result != SUCCESS:
            return result
        build = next((b for b in plan.builds if b.variant == readiness.PACKAGE and b.arch == readiness.ARCH), None)
        if build is None:
            why = "; ".join(f"{s.variant}: {s.reason}" for s in plan.skipped) or "not in the plan"
            self.descriptionDone = f"{readiness.PACKAGE} {readiness.ARCH} is not built for {plan.version}: {why}"
            return Result.FAILURE
        self.setProperty("pythons", list(build.pythons), "plan")
        self.setProperty("abi3", build.abi3, "plan")
        self.setProperty("abi3_floor", build.abi3_floor, "plan")
        return SUCCESS
