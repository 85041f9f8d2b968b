"""Readiness builds on the master (``[readiness]``, ``farm/readiness.py``): builders, schedulers, factory.

One builder per target (``readiness-branch``, ``readiness-prerelease``) on
the x86_64 workers.  Buildbot's own ``Nightly`` scheduler starts both at
``hour:minute`` (the master's local time); the "Readiness now" button
(``readiness-now``, no fields) starts both at once, which is also how the
tests start them.  The factory has no upload step, and its first step sets
``dry_run``: nothing a request says can make a readiness build publish.
"""

from __future__ import annotations

from pathlib import Path

from buildbot.plugins import schedulers, util
from buildbot.process.factory import BuildFactory

from farm import readiness
from farm.settings import Settings
from master.factories import OUT, SRC, Factory, args, checkout, opt, root, ship_toolchain
from master.schedulers import StrictForceScheduler
from master.tags import UpstreamTags
from steps import toolchain
from steps.readiness import PlanReadiness, ResolveReadiness, resolved

FORCE, NIGHTLY = "readiness-now", "readiness-nightly"


def builder_names(settings: Settings) -> list[str]:
    r = settings.readiness
    return [readiness.builder_name(t) for t in r.targets()] if r.enabled else []


def factory(settings: Settings, tarball: Path, target: str, tags: UpstreamTags) -> BuildFactory:
    """Resolve the target, then what a release's variant build does up to verify and smoke: no upload."""
    pkg, arch = readiness.PACKAGE, readiness.ARCH
    f = Factory()
    f.addStep(ResolveReadiness(target, settings.readiness.branch, tags.forceable))
    go = {"doStepIf": resolved, "hideStepIf": lambda results, step: not resolved(step)}
    f.addStep(checkout(settings, **go))
    f.addSteps(ship_toolchain(tarball, **go))
    f.addStep(PlanReadiness(**go, cli_args=args(
        "--src", SRC, "--version", util.Property("version"), "--variants", pkg, "--arches", arch,
        "--python-versions", settings.build.python_versions)))
    f.addStep(toolchain.PatchSource(**go, cli_args=args(
        "--variant", pkg, "--src", SRC, "--arch", arch, "--version", util.Property("version"),
        opt("--python-versions", "pythons"))))
    f.addStep(toolchain.QueueWheelBuilds(**go, build_args=[
        "--variant", pkg, "--src", SRC, "--out", OUT, *settings.build.build_args(),
        root(settings.build.root_for(arch))], smoke_args=settings.build.smoke_args(),
        cache=settings.cache))
    return f


def make_builders(settings: Settings, workers_by_arch: dict[str, list[str]], tarball: Path,
                  tags: UpstreamTags, locks: list | None = None) -> list[util.BuilderConfig]:
    r = settings.readiness
    if not r.enabled:
        return []
    what = {readiness.BRANCH: f"the upstream branch {r.branch} (as the next .dev0 version)",
            readiness.PRERELEASE: "the newest upstream pre-release tag"}
    return [util.BuilderConfig(
        name=readiness.builder_name(t), workernames=workers_by_arch.get(readiness.ARCH, []),
        # Two nights waiting for a worker are one build.
        collapseRequests=True, tags=["readiness", readiness.ARCH], locks=list(locks or []),
        factory=factory(settings, tarball, t, tags),
        description=f"readiness: a dry run of {readiness.PACKAGE} {readiness.ARCH} from {what[t]}; "
                    "plan, patch, build, verify, smoke, never an upload",
    ) for t in r.targets()]


def make_schedulers(settings: Settings) -> list:
    r = settings.readiness
    names = builder_names(settings)
    if not names:
        return []
    out: list = [StrictForceScheduler(
        name=FORCE, builderNames=names, buttonName="Readiness now", properties=[],
        label=f"Dry-run {readiness.PACKAGE} {readiness.ARCH} from the upstream's {r.branch} and newest pre-release")]
    if r.nightly:
        out.append(schedulers.Nightly(name=NIGHTLY, builderNames=names, hour=r.hour, minute=r.minute,
                                      onlyIfChanged=False))
    return out
