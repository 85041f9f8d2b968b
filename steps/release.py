"""Master-side steps of the ``release`` and ``recheck`` builders (no worker command).

Resolve which release a build is for, skip a duplicate request, drop what
the index already has, fan out to the variant builders, and the periodic
re-check.  Anything blocking (HTTP, git ls-remote) runs in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.data import resultspec
from buildbot.process import buildstep
from buildbot.process.results import CANCELLED, EXCEPTION, FAILURE, SKIPPED, SUCCESS, WARNINGS
from buildbot.steps.trigger import Trigger
from twisted.internet import defer, threads

from master import inputs
from master.report import child_row, fetch_children, flatten, format_table


class ResolveRelease(buildstep.BuildStep):
    """Work out the release this build is for, and its tag as the upstream has it.

    The version comes from a forced ``versions`` (force form), a triggered
    ``version`` (re-check) or the tag a change announced (``branch``: poller,
    signed webhook), in that order; ``master/inputs.py`` guarantees each came
    from where it should.  The tag checked out is always the upstream's own
    tag for that version (``git ls-remote``), never a ref a request named.
    """

    name = "release"

    def __init__(self, tag_version: Callable[[str], str | None], tag_for: Callable[[str], str | None],
                 **kwargs: Any) -> None:
        self.tag_version = tag_version  # tag or refs/tags/... -> version string (None: not a release)
        self.tag_for = tag_for  # version -> upstream tag (None: no such tag); blocking
        super().__init__(**kwargs)

    def _fail(self, text: str, why: str):
        self.descriptionDone = text
        d = self.addCompleteLog("why", why + "\n")
        return d.addCallback(lambda _: FAILURE)

    @defer.inlineCallbacks
    def run(self):
        forced = self.getProperty("versions")  # the force form: one version per release build
        triggered = self.getProperty("version")
        branch = str(self.getProperty("branch") or "")
        if forced:
            version, origin = str(forced), "forced"
        elif triggered:
            version, origin = str(triggered), "re-check"
        elif branch:
            version, origin = self.tag_version(branch), f"tag {branch}"
            if not version:
                return (yield self._fail(f"not a release tag: {branch}",
                                         f"{branch} does not match upstream.tag_regex (or is a pre-release "
                                         "and upstream.build_prereleases is false)."))
        else:
            return (yield self._fail("not a release: no version and no tag",
                                     "This build has no forced version, no triggered version and no tag."))
        try:
            tag = yield threads.deferToThread(self.tag_for, str(version))
        except Exception as exc:
            return (yield self._fail(f"cannot list upstream tags: {exc}"[:200], f"{type(exc).__name__}: {exc}"))
        if not tag:
            return (yield self._fail(f"{version} ({origin}): no such release tag upstream",
                                     f"The upstream has no release tag for {version}."))
        self.setProperty("tag", tag, "release")
        self.setProperty("version", str(version), "release")
        bits = [f"vLLM {version} ({tag})"]
        if self.getProperty("postfix"):
            bits.append(f"postfix {self.getProperty('postfix')}")
        if self.getProperty("dry_run"):
            bits.append("DRY RUN")
        elif self.getProperty("skip_upload"):
            bits.append("no upload")
        self.descriptionDone = ", ".join(bits)
        return SUCCESS


@defer.inlineCallbacks
def open_requests(master, builder: str):
    """Unfinished build requests of ``builder``, oldest first, each as (request, {property: value}).

    The release, re-check and variant fan-out all ask "is this already
    queued or running?": the answer is in the requests' buildset properties.
    """
    builder_id = yield master.data.updates.findBuilderId(builder)
    brs = yield master.data.get(("builders", builder_id, "buildrequests"),
                                filters=[resultspec.Filter("complete", "eq", [False])])
    out = []
    for br in sorted(brs or [], key=lambda r: r["buildrequestid"]):
        raw = yield master.db.buildsets.getBuildsetProperties(br["buildsetid"])
        # Only what a build of that request would itself trust (master/inputs.py).
        out.append((br, flatten({k: v for k, v in raw.items() if inputs.trusted(k, v[1])})))
    return out


class SkipDuplicateRelease(buildstep.BuildStep):
    """Do nothing when an older request for the same release has not fanned out yet.

    The poller (or change hook) and the periodic re-check can both start a
    release of one tag within a second, e.g. at a master restart.  Until the
    older one triggers its variant builds, the newer one's ``already_published``
    step cannot see them and would build every wheel a second time.  Once the
    older one has fanned out, a newer request goes on: ``already_published``
    drops what is queued, and rebuilds what failed.  The oldest request never
    waits, so nothing is skipped for good.
    """

    name = "duplicate_check"

    def __init__(self, tag_version: Callable[[str], str | None], same_release: list[str], release_builder: str,
                 **kwargs: Any) -> None:
        self.tag_version = tag_version  # tag or refs/tags/... -> version (None: not a release)
        self.same_release = list(same_release)  # properties that must match (None/absent = the default)
        self.release_builder = release_builder
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def _version_of(self, bsid: int, props: dict):
        if props.get("versions") or props.get("version"):  # forced / triggered
            return str(props.get("versions") or props["version"])
        tag = props.get("tag")
        if not tag:
            bs = yield self.master.data.get(("buildsets", bsid))
            tag = next((ss.get("branch") for ss in (bs or {}).get("sourcestamps") or [] if ss.get("branch")), "")
        return self.tag_version(str(tag or "").removeprefix("refs/tags/"))

    @defer.inlineCallbacks
    def _fanned_out(self, brid: int):
        builds = yield self.master.data.get(("buildrequests", brid, "builds"))
        for b in builds or []:
            steps = yield self.master.data.get(("builds", b["buildid"], "steps"))
            if any(st["name"] == FanOut.name and st["started_at"] for st in steps or []):
                return True
        return False

    @defer.inlineCallbacks
    def run(self):
        mine = self.build.requests[0].id
        version = self.getProperty("version")
        same = {k: self.getProperty(k) or None for k in self.same_release}
        for br, props in (yield open_requests(self.master, self.release_builder)):
            if br["buildrequestid"] >= mine:
                continue
            if {k: props.get(k) or None for k in self.same_release} != same:
                continue
            other = yield self._version_of(br["buildsetid"], props)
            if other != version:
                continue
            if (yield self._fanned_out(br["buildrequestid"])):
                continue
            self.setProperty("duplicate_of", br["buildrequestid"], self.name)
            self.descriptionDone = f"{version}: duplicate of build request {br['buildrequestid']}, nothing to do"
            return SUCCESS
        self.descriptionDone = "no older request for this release"
        return SUCCESS


class DropPublished(buildstep.BuildStep):
    """Remove from the plan what the index already has or a queued build will make; sets ``todo``."""

    name = "already_published"

    def __init__(self, check: Callable[[list[dict], str, bool], tuple[list[dict], list[str]]],
                 builder_for: Callable[[str, str], str] | None = None, **kwargs: Any) -> None:
        self.check = check  # (builds, version, include_posts) -> (todo, notes); blocking
        self.builder_for = builder_for  # (variant, arch) -> builder name, to find queued duplicates
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        plan = self.getProperty("plan") or {}
        builds = list(plan.get("builds", []))
        version = self.getProperty("version")
        postfix = self.getProperty("postfix") or ""
        final = version + postfix if postfix else version
        notes: list[str] = []
        if self.getProperty("dry_run"):
            todo = builds
            notes.append("dry run: the index is not consulted, everything planned is built")
        else:
            try:
                todo, notes = yield threads.deferToThread(self.check, builds, final, not postfix)
            except Exception as exc:  # the index is down: better no build than a duplicate
                self.descriptionDone = f"index not reachable: {exc}"[:200]
                yield self.addCompleteLog("error", f"{type(exc).__name__}: {exc}\n")
                return FAILURE
        if self.builder_for is not None:
            todo, queued = yield self._drop_queued(todo, version, postfix, bool(self.getProperty("dry_run")))
            notes += queued
        self.setProperty("todo", todo, "published")
        yield self.addCompleteLog("index", "\n".join(notes or ["nothing of this release is published yet"]) + "\n")
        skipped = len(builds) - len(todo)
        self.descriptionDone = (f"{len(todo)} to build, {skipped} already published or queued"
                                if builds else "plan has no builds")
        return SUCCESS

    @defer.inlineCallbacks
    def _drop_queued(self, todo: list[dict], version: str, postfix: str, dry_run: bool):
        """Never queue a second request for a (variant, arch, version) that is still waiting or running."""
        keep, notes = [], []
        for b in todo:
            dup = None
            for br, p in (yield open_requests(self.master, self.builder_for(b["variant"], b["arch"]))):
                if (p.get("version") == version and (p.get("postfix") or "") == postfix
                        and bool(p.get("dry_run")) == dry_run):
                    dup = br["buildrequestid"]
                    break
            if dup is None:
                keep.append(b)
            else:
                notes.append(f"{b['variant']} {b['arch']}: already queued or running (build request {dup})")
        return keep, notes


class FanOut(Trigger):
    """Trigger one variant×arch build per ``todo`` entry, wait, and report the whole release."""

    name = "fan_out"

    def __init__(self, scheduler_for: Callable[[str, str], str], common_props: list[str], **kwargs: Any) -> None:
        self.scheduler_for = scheduler_for  # (variant, arch) -> Triggerable name
        self.common_props = common_props  # properties copied from the release build
        kwargs.setdefault("waitForFinish", True)
        kwargs.setdefault("alwaysUseLatest", True)
        super().__init__(**kwargs)

    def getResultSummary(self):
        # Trigger's own summary only names the schedulers; ours says what happened.
        if self.descriptionDone:
            return buildstep.BuildStep.getResultSummary(self)
        return super().getResultSummary()

    def getSchedulersAndProperties(self):
        out = []
        common = {p: self.getProperty(p) for p in self.common_props if self.getProperty(p) is not None}
        for b in self.getProperty("todo") or []:
            props = {**common, "variant": b["variant"], "arch": b["arch"], "pythons": list(b.get("pythons", [])),
                     "abi3": bool(b.get("abi3"))}
            out.append({"sched_name": self.scheduler_for(b["variant"], b["arch"]), "props_to_set": props,
                        "unimportant": False})
        return out

    @defer.inlineCallbacks
    def run(self):
        if not self.getProperty("todo"):
            self.descriptionDone = "nothing to build"
            return SKIPPED
        result = yield super().run()
        rows = [child_row(c) for c in (yield fetch_children(self.master, self.build.buildid))]
        yield self.addCompleteLog("release", format_table(rows))
        done = sum(1 for r in rows if r["result"] in ("success", "warnings"))
        self.descriptionDone = f"{self.getProperty('version')}: {done}/{len(rows)} variant build(s) ok"
        return result


class Recheck(Trigger):
    """Periodic re-check: start a release for every release tag nothing was published for.

    A version whose release already failed ``max_attempts`` times is left to
    a maintainer (force a release): retrying a broken upstream tag every
    interval would only burn worker time and mail the same failure again.
    """

    name = "recheck"

    def __init__(self, find_missing: Callable[[], list[tuple[str, str]]], release_builder: str,
                 max_attempts: int = 3, **kwargs: Any) -> None:
        self.find_missing = find_missing  # blocking: [(version, tag)] with nothing in the index
        self.release_builder = release_builder
        self.max_attempts = max_attempts
        kwargs.setdefault("waitForFinish", False)
        kwargs.setdefault("alwaysUseLatest", True)
        super().__init__(**kwargs)
        self._todo: list[tuple[str, str]] = []

    def getResultSummary(self):
        # Trigger's own summary only names the schedulers; ours says what happened.
        if self.descriptionDone:
            return buildstep.BuildStep.getResultSummary(self)
        return super().getResultSummary()

    @defer.inlineCallbacks
    def _failures(self, builder_id: int, versions: set[str]):
        """Failed (not cancelled, not dry-run) release builds per version among ``versions``."""
        builds = yield self.master.data.get(("builders", builder_id, "builds"),
                                            filters=[resultspec.Filter("complete", "eq", [True])])
        counts: dict[str, int] = {}
        for b in builds or []:
            if b["results"] not in (FAILURE, EXCEPTION):
                continue
            props = flatten((yield self.master.data.get(("builds", b["buildid"], "properties"))))
            version = props.get("version")
            if version in versions and not props.get("dry_run"):
                counts[version] = counts.get(version, 0) + 1
        return counts

    @defer.inlineCallbacks
    def run(self):
        try:
            missing = yield threads.deferToThread(self.find_missing)
        except Exception as exc:
            self.descriptionDone = f"re-check failed: {exc}"[:200]
            return FAILURE
        busy: set[str] = set()
        failed: dict[str, int] = {}
        if missing:
            # Versions with a release request not finished yet: never start one twice.
            busy = {p["version"] for _, p in (yield open_requests(self.master, self.release_builder))
                    if "version" in p}
            builder_id = yield self.master.data.updates.findBuilderId(self.release_builder)
            failed = yield self._failures(builder_id, {v for v, _ in missing})
        given_up = [v for v, _ in missing if v not in busy and failed.get(v, 0) >= self.max_attempts]
        self._todo = [(v, t) for v, t in missing if v not in busy and v not in given_up]
        log = []
        for v, t in missing:
            if v in busy:
                why = "a release is already queued"
            elif v in given_up:
                why = f"its release failed {failed[v]} times; left to a maintainer (force a release to retry)"
            else:
                why = "starting" + (f" (attempt {failed[v] + 1} of {self.max_attempts})" if failed.get(v) else "")
            log.append(f"{v} ({t}): nothing published; {why}")
        yield self.addCompleteLog("recheck", "\n".join(log or ["every release tag has published wheels"]) + "\n")
        given_up_note = f"; failed too often: {', '.join(given_up)}" if given_up else ""
        if not self._todo:
            self.descriptionDone = ("all releases published or in progress" if not given_up
                                    else "nothing started" + given_up_note)
            return WARNINGS if given_up else SUCCESS
        result = yield super().run()
        self.descriptionDone = "started " + ", ".join(v for v, _ in self._todo) + given_up_note
        if result not in (SUCCESS, CANCELLED):
            return result
        return WARNINGS if given_up else SUCCESS

    def getSchedulersAndProperties(self):
        return [{"sched_name": self.schedulerNames[0], "props_to_set": {"version": v, "tag": t, "recheck": True},
                 "unimportant": False} for v, t in self._todo]
