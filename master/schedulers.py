"""Schedulers: upstream tags, the force form, variant triggers and the re-check."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from buildbot.plugins import changes, schedulers, util
from buildbot.process.properties import Properties
from buildbot.schedulers.forcesched import CollectedValidationError, ValidationError, ValidationErrorCollector
from twisted.internet import defer, threads

from master import versions
from master.names import RECHECK, RELEASE, builder_name, trigger_name
from master.settings import Settings
from vllm_cpu_build.variants import ARCHES, Catalog


def list_upstream_versions(settings: Settings, prereleases: bool | None = None) -> dict[str, str]:
    """version -> tag for the upstream's release tags (``git ls-remote``; blocking).

    Pre-releases are listed when ``prereleases`` (default: the settings'
    ``build_prereleases``) says so.
    """
    out = subprocess.run(["git", "ls-remote", "--tags", "--refs", settings.upstream_url],
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"git ls-remote {settings.upstream_url}: {out.stderr.strip()[:300]}")
    refs = [line.split("\t", 1)[1] for line in out.stdout.splitlines() if "\t" in line]
    pre = settings.build_prereleases if prereleases is None else prereleases
    return versions.release_tags(refs, settings.tag_pattern, pre)


def is_release_ref(settings: Settings) -> Callable[[str], bool]:
    def check(branch: str | None) -> bool:
        if not branch:
            return False
        v = versions.tag_version(branch, settings.tag_pattern)
        return v is not None and (settings.build_prereleases or not v.is_prerelease)

    return check


class _Checked(util.StringParameter):
    """A text field whose value is validated/normalised by ``check`` (raises InputError)."""

    def __init__(self, name: str, check: Callable[[str], object], **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self._check = check

    def parse_from_arg(self, s: str):
        try:
            return self._check(s)
        except versions.InputError as exc:
            raise ValidationError(str(exc)) from None


def _check_versions_syntax(s: str) -> str:
    # Syntax only here; the expansion against upstream tags happens in force().
    versions.parse_version_spec(s)
    return s.strip()


def _check_pythons(s: str) -> str:
    versions.parse_pythons(s)
    return s.strip() or "auto"


class ReleaseForceScheduler(schedulers.ForceScheduler):
    """The force form: versions are expanded against upstream tags, one release per version.

    Every field is validated before anything is queued; errors name the field
    (HTTP 400 over the REST API, red text in the web form).
    """

    def checkConfig(self, builderNames, list_versions=None, **kwargs):
        super().checkConfig(builderNames, **kwargs)

    def reconfigService(self, builderNames, list_versions=None, **kwargs):
        self.list_versions = list_versions
        return super().reconfigService(builderNames, **kwargs)

    @defer.inlineCallbacks
    def force(self, owner, builderNames=None, builderid=None, **kwargs):
        if builderid is not None:
            try:
                builder = yield self.master.data.get(("builders", int(builderid)))
            except (ValueError, TypeError):
                builder = None
            if not builder or builder["name"] not in self.builderNames:
                raise CollectedValidationError({
                    "builderid": f"no builder {builderid!r} for this scheduler; it starts: "
                                 + ", ".join(self.builderNames)})
        if builderNames is not None and not set(builderNames) <= set(self.builderNames):
            unknown = sorted(set(builderNames) - set(self.builderNames))
            raise CollectedValidationError({"builderNames": f"unknown builder(s) {', '.join(unknown)}; "
                                                            f"this scheduler starts: {', '.join(self.builderNames)}"})
        builderNames = yield self.computeBuilderNames(builderNames, builderid)

        kwargs = {k: (v if isinstance(v, list) else [v]) for k, v in kwargs.items()}
        collector = ValidationErrorCollector()
        reason = yield collector.collectValidationErrors(self.reason.fullName, self.reason.getFromKwargs, kwargs)
        if owner is None or owner == "anonymous":
            owner = yield collector.collectValidationErrors(
                self.username.fullName, self.username.getFromKwargs, kwargs)
        priority = yield collector.collectValidationErrors(
            self.forced_priority.fullName, self.forced_priority.getFromKwargs, kwargs)
        properties, _, sourcestamps = yield self.gatherPropertiesAndChanges(collector, **kwargs)

        chosen: list[tuple[str, str]] = []
        spec = properties.getProperty("versions")
        if "versions" not in collector.errors and spec:
            try:
                available = yield threads.deferToThread(self.list_versions)
            except Exception as exc:
                collector.errors["versions"] = f"cannot list upstream tags: {exc}"
            else:
                try:
                    chosen = [(v, available[v]) for v in versions.expand_versions(spec, available)]
                except versions.InputError as exc:
                    collector.errors["versions"] = str(exc)
        if not properties.getProperty("variants") and "variants" not in collector.errors:
            collector.errors["variants"] = "choose at least one variant"
        if not properties.getProperty("arches") and "arches" not in collector.errors:
            collector.errors["arches"] = "choose at least one platform"
        collector.maybeRaiseCollectedErrors()

        properties.setProperty("reason", reason, "Force Build Form")
        properties.setProperty("owner", owner, "Force Build Form")
        for cb, ss in sourcestamps.items():
            ss["codebase"] = cb
        results = []
        for version, tag in chosen:
            props = Properties()
            props.updateFromProperties(properties)
            props.setProperty("version", version, "Force Build Form")
            props.setProperty("tag", tag, "Force Build Form")
            res = yield self.addBuildsetForSourceStampsWithDefaults(
                reason=self.reasonString % {"owner": owner, "reason": reason} + f" ({version})",
                sourcestamps=list(sourcestamps.values()), properties=props,
                builderNames=builderNames, priority=priority)
            results.append(res)
        # The web UI expects one (bsid, brids); REST callers find every buildset via the API.
        return results[0]


def make_force(settings: Settings, catalog: Catalog, list_versions) -> ReleaseForceScheduler:
    names = catalog.names()
    return ReleaseForceScheduler(
        name="force-release", builderNames=[RELEASE], list_versions=list_versions,
        buttonName="Release", label="Build and publish vLLM releases",
        reason=util.StringParameter(name="reason", label="Reason", default="manual release", size=40),
        properties=[
            _Checked("versions", _check_versions_syntax, label="vLLM versions (0.11.2 | 0.11.0-0.12.0 | mix)",
                     required=True, size=50),
            _Checked("python_versions", _check_pythons, label="Python versions (auto | 3.11,3.12 | 3.10-3.13)",
                     default=settings.python_versions, size=20),
            util.ChoiceStringParameter(name="variants", label="Variants", choices=names, default=names,
                                       multiple=True, strict=True),
            util.ChoiceStringParameter(name="arches", label="Platforms", choices=list(ARCHES),
                                       default=list(ARCHES), multiple=True, strict=True),
            _Checked("postfix", versions.normalize_postfix, label="Version postfix (.post1 .dev1 a1 b1 rc1)",
                     default="", size=10),
            util.BooleanParameter(name="dry_run", label="Dry run (everything but the upload)", default=False),
            util.BooleanParameter(name="skip_upload", label="Skip upload", default=False),
        ],
    )


def make_schedulers(settings: Settings, catalog: Catalog, list_forceable) -> list:
    out: list = [
        # Tags from the poller (branch = refs/tags/...) and the change hook.
        schedulers.AnyBranchScheduler(
            name="release-tags", builderNames=[RELEASE], treeStableTimer=None,
            change_filter=util.ChangeFilter(branch_fn=is_release_ref(settings)),
        ),
        schedulers.Triggerable(name="release-trigger", builderNames=[RELEASE]),
        make_force(settings, catalog, list_forceable),
        schedulers.ForceScheduler(name="recheck-now", builderNames=[RECHECK], buttonName="Re-check now",
                                  label="Re-check upstream tags against the index", properties=[]),
    ]
    if settings.recheck_interval:
        out.append(schedulers.Periodic(name="recheck-periodic", builderNames=[RECHECK],
                                       periodicBuildTimer=settings.recheck_interval))
    for v, a in catalog.builds():
        out.append(schedulers.Triggerable(name=trigger_name(v.package, a), builderNames=[builder_name(v.package, a)]))
    return out


def make_change_sources(settings: Settings) -> list:
    # No poll at launch: Buildbot starts change sources before the schedulers
    # are active, so tags pushed while the master was down would be recorded
    # as changes that no scheduler ever sees (measured on 4.3).  The first
    # poll comes one interval later; the periodic re-check runs at start-up.
    return [changes.GitPoller(
        repourl=settings.upstream_url, only_tags=True, buildPushesWithNoCommits=True,
        pollInterval=settings.poll_interval, pollAtLaunch=False, workdir="gitpoller-upstream", project="vllm",
    )]
