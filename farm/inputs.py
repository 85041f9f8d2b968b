"""The trust boundary: every build property a step may read, and where it may come from.

A Buildbot build starts with properties from its change(s), its build
request (force form, trigger, scheduler), its builder, its worker and its
source stamp.  A change or a request could thus name the ref to check out,
the interpreter a worker runs, the index, the variants, the postfix, dry run
or "duplicate" state.  Here every property name a build reads is listed with
the origins a value present when the build starts may have; ``TrustedBuild``
drops everything else before the first step runs (and says so in the
``ignored_inputs`` property).  A name whose origins are empty is computed by
a step of the build itself: a value for it arriving from outside is dropped.
Nothing may come from a change (``tests/unit/test_inputs.py`` reads the steps and
fails when a property they read is missing here or allowed from a change).
Origins are Buildbot's property sources (the second item of a property).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORCE = "Force Build Form"  # a force parameter, validated by master/schedulers.py (admins only, with login)
TRIGGER = "Trigger"  # set by our own Trigger steps: the release's fan-out, the re-check
SCHEDULER = "Scheduler"  # the scheduler's own name
BUILDER = "Builder"  # Buildbot: the builder's name
WORKER = "Worker"  # master/workers.py from workers/registry.toml; Buildbot: worker name, build directory
BUILD = "Build"  # Buildbot, from the source stamp (for tag releases: the verified tag) and the build number
CHANGE = "Change"  # a change's own properties: never trusted
IGNORED = "ignored_inputs"  # set by TrustedBuild: what it dropped, "name (origin)"


@dataclass(frozen=True)
class Input:
    origins: frozenset[str]  # where a value present at build start may come from; empty: a step sets it
    reader: str  # who reads it, for what


def _i(origins: set[str], reader: str) -> Input:
    return Input(frozenset(origins), reader)


INPUTS: dict[str, Input] = {
    # The force form (release builder): each checked in ReleaseForceScheduler before anything is queued.
    "versions": _i({FORCE}, "ResolveRelease: the one version of this forced release"),
    "python_versions": _i({FORCE}, "plan --python-versions (normalised Python spec)"),
    "variants": _i({FORCE, TRIGGER}, "plan --variants; duplicate check; the images of those packages only"),
    "arches": _i({FORCE}, "plan --arches; duplicate check"),
    "postfix": _i({FORCE, TRIGGER}, "plan/patch --version-postfix; already-published check; report"),
    "dry_run": _i({FORCE, TRIGGER}, "no upload; already-published check; report"),
    "skip_upload": _i({FORCE, TRIGGER}, "no upload; report"),
    "reason": _i({FORCE}, "release mail"),
    "use_highest_postfix": _i({FORCE, TRIGGER}, "GitHub release and images: the highest .postN on the index"),
    "owner": _i({FORCE}, "Buildbot: who forced"),
    # From our own trigger steps (re-check -> release, release -> variant builds).
    # FORCE only through the "Build images" form (the release form has no such field).
    "version": _i({TRIGGER, FORCE}, "ResolveRelease (re-check); variant builds; images; report"),
    "tag": _i({TRIGGER}, "variant builds: the ref checked out (the release resolved it from the upstream)"),
    "recheck": _i({TRIGGER}, "marks a release started by the re-check"),
    "variant": _i({TRIGGER}, "verify/smoke --variant; report"),
    "arch": _i({TRIGGER}, "verify --arch; report"),
    "pythons": _i({TRIGGER}, "patch --python-versions; one wheel build per Python"),
    "abi3": _i({TRIGGER}, "one abi3 wheel build"),
    # A variant build -> its reproduce build ([build] reproduce): whose wheels, and their recorded sha256.
    "reproduce_of": _i({TRIGGER}, "reproduce build: the variant build (custody directory, worker to avoid)"),
    "expected_sha256": _i({TRIGGER}, "reproduce build: the sha256 the first build recorded; compared on the master"),
    "abi3_floor": _i({TRIGGER}, "from this Python on one stable-ABI wheel, below it one wheel per Python"),
    # Buildbot's own, and the worker registry's.
    "scheduler": _i({SCHEDULER}, "Buildbot"),
    "buildername": _i({BUILDER}, "Buildbot"),
    "builderid": _i({BUILDER}, "Buildbot"),
    "workername": _i({WORKER}, "Buildbot"),
    "worker_arch": _i({WORKER}, "informational (registry)"),
    "worker_admin": _i({WORKER}, "informational (registry)"),
    "worker_python": _i({WORKER}, "ShipToolchain: the interpreter that bootstraps the toolchain (registry)"),
    "worker_build_root": _i({WORKER}, "build --root: the root file system this worker builds in (registry)"),
    "builddir": _i({WORKER}, "absolute paths of every toolchain command"),
    "basedir": _i({WORKER}, "Buildbot"),
    "buildnumber": _i({BUILD}, "Buildbot"),
    "branch": _i({BUILD}, "ResolveRelease: the tag a change announced (re-checked against the upstream)"),
    "revision": _i({BUILD}, "Buildbot"),
    "repository": _i({BUILD}, "Buildbot"),
    "codebase": _i({BUILD}, "Buildbot"),
    "project": _i({BUILD}, "Buildbot"),
    # Computed by the build's own steps; never accepted from outside.
    "duplicate_of": _i(set(), "SkipDuplicateRelease -> every later release step skipped"),
    "plan": _i(set(), "PlanRelease -> DropPublished"),
    "todo": _i(set(), "DropPublished -> FanOut"),
    "toolchain_python": _i(set(), "ShipToolchain -> the interpreter of every toolchain command"),
    "final_version": _i(set(), "PatchSource"),
    "pinned_flags": _i(set(), "PatchSource"),
    "wheels": _i(set(), "BuildWheel -> FetchWheels (to the master), report"),
    "built": _i(set(), "BuildWheel: the sha256 each build recorded -> FetchWheels, PublishWheels (must match)"),
    "verify": _i(set(), "VerifyWheel -> report"),
    "smoke": _i(set(), "SmokeTest -> report"),
    "uploaded": _i(set(), "PublishWheels -> report"),
    "reproduced": _i(set(), "CompareRebuilt (master) -> ReproduceWheels: rebuilt sha256 and what differs"),
    "got_revision": _i(set(), "Buildbot's Git step"),
    "only_builds": _i(set(), "RebuildFailed -> DropPublished: a rebuild builds only the failed builds"),
    "rebuild_of": _i(set(), "RebuildFailed: the release build this one rebuilds"),
    "waiting": _i(set(), "FanOut: variant builds waiting for a worker -> report, notifications"),
    "skip_builds": _i({TRIGGER}, "re-check -> DropPublished: missing builds given up on, not rebuilt"),
    "images": _i(set(), "BuildImage -> images pushed, per package"),
    "provenance": _i(set(), "a variant build's per-wheel provenance records -> the GitHub release"),
    "patch_failure": _i(set(), "PatchSource: the file and the text an edit no longer finds -> matrix, mails"),
    "readiness": _i(set(), "ResolveReadiness: target, ref and version of a readiness build -> matrix, mail"),
    IGNORED: _i(set(), "TrustedBuild: what it dropped"),
}

def _check_no_change_origin() -> None:
    """The invariant of this table, checked at import (``python -O`` keeps it, unlike an assert)."""
    bad = sorted(name for name, i in INPUTS.items() if CHANGE in i.origins)
    if bad:
        raise RuntimeError(f"a change may never set a build property: {', '.join(bad)}")


_check_no_change_origin()


def trusted(name: str, origin: str) -> bool:
    """Whether a property ``name`` from ``origin`` may be read by a build (or a step about another request)."""
    entry = INPUTS.get(name)
    return entry is not None and origin in entry.origins


def drop_untrusted(properties: Any) -> list[str]:
    """Remove from a Buildbot ``Properties`` every property not allowed from its origin; returns "name (origin)"."""
    dropped = [f"{name} ({origin})" for name, (_, origin) in sorted(properties.properties.items())
               if not trusted(name, origin)]
    for name in [n for n, (_, origin) in properties.properties.items() if not trusted(n, origin)]:
        del properties.properties[name]
        properties.runtime.discard(name)
    return dropped
