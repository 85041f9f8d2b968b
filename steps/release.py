"""Master-side steps of the ``release`` and ``recheck`` builders (no worker command).

Resolve which release a build is for (and, for a Buildbot "rebuild", which
of its builds failed), skip a duplicate request, drop what the index
already has, fan out to the variant builders and report the release from
their results, and the periodic re-check.  Anything blocking (HTTP, git
ls-remote) runs in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildbot.data import resultspec
from buildbot.process import buildstep
from buildbot.process.results import CANCELLED, EXCEPTION, FAILURE, RETRY, SKIPPED, SUCCESS, WARNINGS
from buildbot.reporters import utils as rutils
from buildbot.steps.trigger import Trigger
from twisted.internet import defer, threads
from twisted.python import log
from twisted.python.failure import Failure

from farm import inputs
from farm.published import MissingBuild, build_key
from farm.report import (
    child_row,
    fetch_children,
    flatten,
    format_table,
    has_usable_worker,
    release_results,
    release_summary,
    waiting_text,
)


class _BuildSummary:
    """A step whose ``build_summary`` (when set) is its line in the build's summary, whatever its result."""

    build_summary: str | None = None

    def getResultSummary(self):
        summary = super().getResultSummary()
        if self.build_summary:
            summary = {**summary, "build": self.build_summary}
        return summary


class ResolveRelease(_BuildSummary, buildstep.BuildStep):
    """Work out the release this build is for, and its tag as the upstream has it.

    The version comes from a forced ``versions`` (force form), a triggered
    ``version`` (re-check) or the tag a change announced (``branch``: poller,
    signed webhook), in that order; ``farm/inputs.py`` guarantees each came
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
            self.build_summary = "DRY RUN"  # on the build itself: nothing of it is published
        elif self.getProperty("skip_upload"):
            bits.append("no upload")
            self.build_summary = "no upload"
        self.descriptionDone = ", ".join(bits)
        return SUCCESS


class RebuildFailed(buildstep.BuildStep):
    """A Buildbot "rebuild" of a release build rebuilds only the variant builds of it that failed.

    Buildbot's rebuild copies the release's request (its parameters: tag or
    forced versions, postfix, dry run, variants, ...) and records the first
    build of the release in the new buildset's ``rebuilt_buildid``.  The
    release so far is that build, its earlier rebuilds and their tries;
    the newest build per variant × arch counts.  Those that failed or were
    cancelled go into ``only_builds``; the rest of the release (published,
    waiting for a worker) is left alone.  Rebuilding is a control action:
    with a users file only an admin may do it (``master/www.py``).
    """

    name = "rebuild_failed"

    @defer.inlineCallbacks
    def run(self):
        bs = yield self.master.data.get(("buildsets", self.build.requests[0].bsid))
        first = (bs or {}).get("rebuilt_buildid")
        if not first:
            self.descriptionDone = "not a rebuild"
            return SKIPPED
        family = [first]
        rebuilds = yield self.master.data.get(("buildsets",), filters=[
            resultspec.Filter("rebuilt_buildid", "eq", [first])])
        for other in sorted(rebuilds or [], key=lambda b: b["bsid"]):
            if other["bsid"] >= bs["bsid"]:
                continue
            brs = yield self.master.data.get(("buildrequests",), filters=[
                resultspec.Filter("buildsetid", "eq", [other["bsid"]])])
            for br in brs or []:
                builds = yield self.master.data.get(("buildrequests", br["buildrequestid"], "builds"))
                family += [b["buildid"] for b in builds or []]
        newest: dict[str, tuple[int, dict]] = {}
        for buildid in family:
            for child in (yield fetch_children(self.master, buildid)):
                row = child_row(child)
                key = build_key(row["variant"], row["arch"])
                if key not in newest or newest[key][0] < child["buildrequestid"]:
                    newest[key] = (child["buildrequestid"], row)
        failed = sorted(k for k, (_, row) in newest.items() if row["result"] in ("failure", "exception", "cancelled"))
        original = yield self.master.data.get(("builds", first))
        self.setProperty("rebuild_of", first, self.name)
        self.setProperty("only_builds", failed, self.name)
        where = f"release #{original['number']}" if original else f"build {first}"
        if failed:
            self.descriptionDone = (f"rebuilding {len(failed)} failed build(s) of {where}: "
                                    + ", ".join(k.replace("/", " ") for k in failed))
        else:
            self.descriptionDone = f"nothing of {where} failed; nothing to rebuild"
        yield self.addCompleteLog("release so far", format_table([row for _, row in newest.values()]))
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
        # Only what a build of that request would itself trust (farm/inputs.py).
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
    """Remove from the plan what the index already has or a queued build will make; sets ``todo``.

    ``only_builds`` (a rebuild: the failed builds) keeps only those
    variant × arch builds; ``skip_builds`` (the re-check: builds that failed
    too often) drops those.
    """

    name = "already_published"

    def __init__(self, check: Callable[[list[dict], str, bool], tuple[list[dict], list[str]]],
                 builder_for: Callable[[str, str], str] | None = None, **kwargs: Any) -> None:
        self.check = check  # (builds, version, include_posts) -> (todo, notes); blocking
        self.builder_for = builder_for  # (variant, arch) -> builder name, to find queued duplicates
        super().__init__(**kwargs)

    def _chosen(self, builds: list[dict], notes: list[str]) -> list[dict]:
        only = self.getProperty("only_builds") if self.hasProperty("only_builds") else None
        skip = set(self.getProperty("skip_builds") or [])
        out = []
        for b in builds:
            key = build_key(b["variant"], b["arch"])
            if only is not None and key not in only:
                notes.append(f"{b['variant']} {b['arch']}: did not fail, not rebuilt")
            elif key in skip:
                notes.append(f"{b['variant']} {b['arch']}: failed too often, left to a maintainer")
            else:
                out.append(b)
        return out

    @defer.inlineCallbacks
    def run(self):
        plan = self.getProperty("plan") or {}
        builds = list(plan.get("builds", []))
        version = self.getProperty("version")
        postfix = self.getProperty("postfix") or ""
        final = version + postfix if postfix else version
        notes: list[str] = []
        todo = self._chosen(builds, notes)
        if self.getProperty("dry_run"):
            notes.append("dry run: the index is not consulted, everything chosen is built")
        elif todo:
            try:
                todo, found = yield threads.deferToThread(self.check, todo, final, not postfix)
            except Exception as exc:  # the index is down: better no build than a duplicate
                self.descriptionDone = f"index not reachable: {exc}"[:200]
                yield self.addCompleteLog("error", f"{type(exc).__name__}: {exc}\n")
                return FAILURE
            notes += found
        if self.builder_for is not None:
            todo, queued = yield self._drop_queued(todo, version, postfix, bool(self.getProperty("dry_run")))
            notes += queued
        self.setProperty("todo", todo, "published")
        yield self.addCompleteLog("index", "\n".join(notes or ["nothing of this release is published yet"]) + "\n")
        chosen = self._chosen(builds, [])
        text = f"{len(todo)} to build, {len(chosen) - len(todo)} already published or queued"
        if len(chosen) < len(builds):
            text += f", {len(builds) - len(chosen)} not chosen"
        self.descriptionDone = text if builds else "plan has no builds"
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
                 poll_interval: float = 5.0, cancel_timeout: float = 300.0, reconnect_grace: float = 300.0,
                 **kwargs: Any) -> None:
        self.scheduler_for = scheduler_for  # (variant, arch) -> Triggerable name
        self.common_props = common_props  # properties copied from the release build
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
        self._wake: defer.Deferred | None = None
        self._stop_reason: str | None = None
        self._lost = False
        self._rows: list[dict] = []
        self._linked: set[str] = set()
        self._cancelled: set[int] = set()
        self.build_summary: str | None = None

    def getCurrentSummary(self):
        if self._rows:
            return {"step": f"{self.getProperty('version')}: {release_summary(self._rows)}"}
        return {"step": "triggering variant builds"}

    def getResultSummary(self):
        # Trigger's own summary only names the schedulers; ours says what happened.
        if not self.descriptionDone:
            return super().getResultSummary()
        summary = buildstep.BuildStep.getResultSummary(self)
        if self.build_summary:
            summary["build"] = self.build_summary
        return summary

    def getSchedulersAndProperties(self):
        out = []
        common = {p: self.getProperty(p) for p in self.common_props if self.getProperty(p) is not None}
        for b in self.getProperty("todo") or []:
            props = {**common, "variant": b["variant"], "arch": b["arch"], "pythons": list(b.get("pythons", [])),
                     "abi3": bool(b.get("abi3"))}
            out.append({"sched_name": self.scheduler_for(b["variant"], b["arch"]), "props_to_set": props,
                        "unimportant": False})
        return out

    def interrupt(self, reason):
        if isinstance(reason, Failure) or getattr(self.master.botmaster, "shuttingDown", False):
            # The master is stopping (Buildbot stops its builds with RETRY, or
            # the in-process worker went away): the release is re-run after
            # the restart; its builds are left alone, to go on then.
            self._lost = True
        elif self._stop_reason is None:
            self._stop_reason = str(reason) or "stopped"
        self._poke()
        return buildstep.BuildStep.interrupt(self, reason)

    @defer.inlineCallbacks
    def run(self):
        version = self.getProperty("version")
        if self.getProperty("todo") and not (yield self._trigger()):
            self.descriptionDone = "could not trigger the variant builds"
            return EXCEPTION
        consumer = yield self.master.mq.startConsuming(lambda *_: self._poke(), ("builds", None, "finished"))
        try:
            kids = yield self._settle()
        finally:
            yield consumer.stopConsuming()
        if self._lost:
            self.descriptionDone = "interrupted: the master is stopping; the release goes on after its restart"
            return RETRY
        rows = [child_row(k) for k in kids]
        if not rows:
            self.descriptionDone = "nothing to build"
            return SKIPPED
        self._rows = rows
        yield self.addCompleteLog("release", format_table(rows, ("variant", "arch", "wheel", "isa", "verify", "smoke",
                                                                 "uploaded", "result", "since")))
        self.setProperty("waiting", [{"variant": r["variant"], "arch": r["arch"], "since": r["since"],
                                      "buildrequestid": k["buildrequestid"]}
                                     for r, k in zip(rows, kids, strict=True) if r["waiting"]], self.name)
        text = release_summary(rows)
        if self._stop_reason is not None:
            self.descriptionDone = f"{version} stopped: {text}"
            self.build_summary = f"vLLM {version} stopped: {text}"
            return CANCELLED
        self.descriptionDone = f"{version}: {text}"
        self.build_summary = f"vLLM {version}: {text}"
        return release_results(rows)

    @defer.inlineCallbacks
    def _trigger(self):
        """Start one build request per ``todo`` entry (not waited for here: see ``_settle``)."""
        sourcestamps = self.prepareSourcestampListForTrigger()
        for entry in self.getSchedulersAndProperties():
            sched = self.getSchedulerByName(entry["sched_name"])
            ids, results = sched.trigger(waited_for=False, sourcestamps=sourcestamps,
                                         set_props=self.createTriggerProperties(entry["props_to_set"]),
                                         parent_buildid=self.build.buildid,
                                         parent_relationship=self.parent_relationship)
            # Its outcome is read from the data API (``_settle``); this deferred only fails at a master stop.
            results.addErrback(lambda _: None)
            try:
                _, brids = yield ids
            except Exception as exc:
                yield self.addLogWithException(exc)
                return False
            self.brids.extend(brids.values())
        return True

    @defer.inlineCallbacks
    def _settle(self):
        """Look at the release's builds until each has finished or waits for a worker of an absent arch."""
        deadline = None
        kids: list[dict] = []
        while True:
            try:
                kids = yield fetch_children(self.master, self.build.buildid)
            except Exception as exc:  # a busy database: look again at the next poll
                log.err(exc, "fan_out: reading the variant builds")
            else:
                yield self._link(kids)
                self._rows = [child_row(k) for k in kids]
                self.updateSummary()
                if self._lost:
                    return kids
                if self._stop_reason is None:
                    if all(k.get("complete") or (k.get("waiting") and not self._returning(k)) for k in kids):
                        return kids
                else:
                    if all(k.get("complete") for k in kids):
                        return kids
                    self._cancel(kids)
                    now = self.master.reactor.seconds()
                    deadline = deadline or now + self.cancel_timeout
                    if now > deadline:
                        return kids
            if self._lost:
                return kids
            yield self._sleep(self.poll_interval)

    def _returning(self, kid: dict) -> bool:
        """Whether a worker may still come back for this re-queued build (within ``reconnect_grace``)."""
        at = kid.get("retried_at")
        return at is not None and self.master.reactor.seconds() - at < self.reconnect_grace

    def _cancel(self, kids: list[dict]) -> None:
        """Cancel every build of this release not finished yet (queued: dropped; running: stopped)."""
        for k in kids:
            brid = k["buildrequestid"]
            if not k.get("complete") and brid not in self._cancelled:
                self._cancelled.add(brid)
                self.master.data.control("cancel", {"reason": f"release stopped: {self._stop_reason}"},
                                         ("buildrequests", brid))

    @defer.inlineCallbacks
    def _link(self, kids: list[dict]):
        """Link each build request and build on the step, so the UI counts what is really pending."""
        for k in kids:
            links = [(f"{k['builder']} request {k['buildrequestid']}",
                      rutils.getURLForBuildrequest(self.master, k["buildrequestid"]))]
            if "number" in k:
                links.append((f"{k['builder']} #{k['number']}",
                              rutils.getURLForBuild(self.master, k["builderid"], k["number"])))
            for name, url in links:
                if url not in self._linked:
                    self._linked.add(url)
                    yield self.addURL(name, url)

    def _sleep(self, seconds: float) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._wake = d
        call = self.master.reactor.callLater(seconds, self._poke)

        def done(result):
            if call.active():
                call.cancel()
            return result

        return d.addBoth(done)

    def _poke(self) -> None:
        d, self._wake = self._wake, None
        if d is not None and not d.called:
            d.callback(None)


class Recheck(Trigger):
    """Periodic re-check: rebuild every applicable build of a release tag that the index lacks.

    ``find_missing`` (blocking) lists the (version, variant, arch, Python)
    builds the index lacks, using the plans of earlier releases where there
    are any.  A missing build already queued (or waiting for a worker of its
    arch) is left to that request; one that failed ``max_attempts`` times is
    left to a maintainer ("rebuild" the release or force one): retrying a
    broken build every interval would only burn worker time and mail the
    same failure again.  For every other version a release starts; it
    builds what is missing (``already_published``) except ``skip_builds``.
    """

    name = "recheck"

    def __init__(self, find_missing: Callable[[dict[str, list[dict]]], list[MissingBuild]], release_builder: str,
                 builder_for: Callable[[str, str], str], max_attempts: int = 3, history: int = 500,
                 **kwargs: Any) -> None:
        self.find_missing = find_missing  # blocking: {version: planned builds} -> what the index lacks
        self.release_builder = release_builder
        self.builder_for = builder_for  # (variant, arch) -> builder name
        self.max_attempts = max_attempts
        self.history = history  # newest release builds read for plans and failures
        kwargs.setdefault("waitForFinish", False)
        kwargs.setdefault("alwaysUseLatest", True)
        kwargs.setdefault("warnOnWarnings", True)
        super().__init__(**kwargs)
        self._todo: list[tuple[str, str, list[str]]] = []

    def getResultSummary(self):
        # Trigger's own summary only names the schedulers; ours says what happened.
        if self.descriptionDone:
            return buildstep.BuildStep.getResultSummary(self)
        return super().getResultSummary()

    @defer.inlineCallbacks
    def _release_history(self):
        """({version: planned builds of its newest plan}, {version: failed releases that never fanned out})."""
        builder_id = yield self.master.data.updates.findBuilderId(self.release_builder)
        builds = yield self.master.data.get(("builders", builder_id, "builds"),
                                            filters=[resultspec.Filter("complete", "eq", [True])],
                                            order=["-buildid"], limit=self.history)
        plans: dict[str, list[dict]] = {}
        failed: dict[str, int] = {}
        for b in builds or []:
            props = flatten((yield self.master.data.get(("builds", b["buildid"], "properties"))))
            version = props.get("version")
            if not version or props.get("postfix"):
                continue
            if props.get("plan") and version not in plans:
                plans[version] = list(props["plan"].get("builds") or [])
            if b["results"] in (FAILURE, EXCEPTION) and not props.get("dry_run") and "todo" not in props:
                failed[version] = failed.get(version, 0) + 1
        return plans, failed

    @defer.inlineCallbacks
    def _variant_failures(self, missing: list[MissingBuild]):
        """{(version, variant/arch): failed (not cancelled, not dry-run) builds} for the missing builds."""
        counts: dict[tuple[str, str], int] = {}
        versions = {m.version for m in missing}
        for variant, arch in sorted({(m.variant, m.arch) for m in missing}):
            builder_id = yield self.master.data.updates.findBuilderId(self.builder_for(variant, arch))
            builds = yield self.master.data.get(("builders", builder_id, "builds"), filters=[
                resultspec.Filter("complete", "eq", [True]), resultspec.Filter("results", "eq", [FAILURE, EXCEPTION])])
            for b in builds or []:
                props = flatten((yield self.master.data.get(("builds", b["buildid"], "properties"))))
                if props.get("version") in versions and not props.get("dry_run") and not props.get("postfix"):
                    key = (props["version"], build_key(variant, arch))
                    counts[key] = counts.get(key, 0) + 1
        return counts

    @defer.inlineCallbacks
    def _queued(self, m: MissingBuild):
        """Why nothing needs starting for ``m``: its open build request (queued, running, waiting), or None."""
        for br, props in (yield open_requests(self.master, self.builder_for(m.variant, m.arch))):
            if props.get("version") != m.version or props.get("postfix") or props.get("dry_run"):
                continue
            if br.get("claimed"):
                return f"building (build request {br['buildrequestid']})"
            workers = yield self.master.data.get(("builders", br["builderid"], "workers"))
            if not has_usable_worker(workers):
                return f"{waiting_text(m.arch, br.get('submitted_at'))} (build request {br['buildrequestid']})"
            return f"queued (build request {br['buildrequestid']})"
        return None

    @defer.inlineCallbacks
    def run(self):
        try:
            plans, release_failed = yield self._release_history()
            missing = yield threads.deferToThread(self.find_missing, plans)
        except Exception as exc:
            self.descriptionDone = f"re-check failed: {exc}"[:200]
            return FAILURE
        busy: set[str] = set()
        failures: dict[tuple[str, str], int] = {}
        if missing:
            # Versions with a release not finished yet (planning): never start one twice.
            busy = {p["version"] for _, p in (yield open_requests(self.master, self.release_builder))
                    if "version" in p}
            failures = yield self._variant_failures(missing)
        by_version: dict[tuple[str, str], list[MissingBuild]] = {}
        for m in missing:
            by_version.setdefault((m.version, m.tag), []).append(m)
        lines: list[str] = []
        given_up: list[str] = []
        waiting = 0
        self._todo = []
        for (version, tag), items in by_version.items():
            start, skip = [], []
            for m in items:
                where = f"{version} ({tag}) {m}: not in the index; "
                if version in busy:
                    lines.append(where + "a release of it is queued")
                    continue
                queued = yield self._queued(m)
                failed = failures.get((version, m.key), 0) + release_failed.get(version, 0)
                if queued:
                    waiting += 1
                    lines.append(where + queued)
                elif failed >= self.max_attempts:
                    skip.append(m.key)
                    given_up.append(f"{version} {m}")
                    lines.append(where + f"failed {failed} times; left to a maintainer "
                                 "(rebuild the release or force one to retry)")
                else:
                    start.append(m)
                    lines.append(where + "starting a release"
                                 + (f" (attempt {failed + 1} of {self.max_attempts})" if failed else ""))
            if start:
                self._todo.append((version, tag, sorted(set(skip) - {m.key for m in start})))
        yield self.addCompleteLog("recheck", "\n".join(lines or ["every applicable build is in the index"]) + "\n")
        parts = []
        if self._todo:
            parts.append("started " + ", ".join(v for v, _, _ in self._todo))
        if waiting:
            parts.append(f"{waiting} missing build(s) queued or waiting for a worker")
        if given_up:
            parts.append("failed too often: " + ", ".join(given_up))
        self.descriptionDone = "; ".join(parts) or "every applicable build is in the index"
        result = SUCCESS
        if self._todo:
            result = yield super().run()
        if result not in (SUCCESS, CANCELLED):
            return result
        return WARNINGS if given_up else SUCCESS

    def getSchedulersAndProperties(self):
        out = []
        for version, tag, skip in self._todo:
            props: dict[str, Any] = {"version": version, "tag": tag, "recheck": True}
            if skip:
                props["skip_builds"] = skip
            out.append({"sched_name": self.schedulerNames[0], "props_to_set": props, "unimportant": False})
        return out
