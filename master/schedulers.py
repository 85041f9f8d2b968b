"""Schedulers: upstream tags, the force form, variant triggers and the re-check."""

from __future__ import annotations

from collections.abc import Callable

from buildbot.plugins import changes, schedulers, util
from buildbot.schedulers.forcesched import CollectedValidationError, ValidationError
from twisted.internet import defer, threads

from master.names import RECHECK, RELEASE, builder_name, trigger_name
from master.settings import Settings
from master.tags import UpstreamTags
from vllm_cpu_build import specs
from vllm_cpu_build.variants import ARCHES, Catalog


def is_release_ref(tags: UpstreamTags) -> Callable[[str], bool]:
    def check(branch: str | None) -> bool:
        return bool(branch) and tags.version_of(branch) is not None

    return check


class _Checked(util.StringParameter):
    """A text field whose value is validated/normalised by ``check`` (raises SpecError)."""

    def __init__(self, name: str, check: Callable[[str], object], **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self._check = check

    def parse_from_arg(self, s: str):
        try:
            return self._check(s)
        except specs.SpecError as exc:
            raise ValidationError(str(exc)) from None


def _check_version(s: str) -> str:
    # force() has expanded the form's list or range: each build gets one version.
    return str(specs.parse_version(s.strip()))


def _check_pythons(s: str) -> str:
    specs.parse_pythons(s)
    return s.strip() or "auto"


class ReleaseForceScheduler(schedulers.ForceScheduler):
    """The force form: ``versions`` is expanded against upstream tags, one release per version.

    The expansion is the only thing added to Buildbot's ``ForceScheduler``:
    for each version its own ``force`` runs with that single version, so
    every field is validated by Buildbot's parameters (HTTP 400 naming the
    field over the REST API, red text in the web form).  A bad field fails
    the first call, before anything is queued.
    """

    def checkConfig(self, builderNames, list_versions=None, **kwargs):
        super().checkConfig(builderNames, **kwargs)

    def reconfigService(self, builderNames, list_versions=None, **kwargs):
        self.list_versions = list_versions
        return super().reconfigService(builderNames, **kwargs)

    @defer.inlineCallbacks
    def _check_builder(self, builderNames, builderid):
        # Buildbot answers an unknown builder with a 500; say which ones exist.
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

    @defer.inlineCallbacks
    def _expand(self, spec):
        try:
            specs.parse_version_spec(spec[0] if isinstance(spec, list) and len(spec) == 1 else spec)
            available = yield threads.deferToThread(self.list_versions)
        except specs.SpecError as exc:
            raise CollectedValidationError({"versions": str(exc)}) from None
        except Exception as exc:
            raise CollectedValidationError({"versions": f"cannot list upstream tags: {exc}"}) from None
        try:
            return specs.expand_versions(spec[0] if isinstance(spec, list) else spec, available)
        except specs.SpecError as exc:
            raise CollectedValidationError({"versions": str(exc)}) from None

    @defer.inlineCallbacks
    def force(self, owner, builderNames=None, builderid=None, **kwargs):
        yield self._check_builder(builderNames, builderid)
        chosen = yield self._expand(kwargs.get("versions", ""))
        results = []
        for version in chosen:
            res = yield super().force(owner, builderNames=builderNames, builderid=builderid,
                                      **{**kwargs, "versions": version})
            results.append(res)
        # The web UI expects one (bsid, brids); REST callers find every buildset via the API.
        return results[0]


def make_force(settings: Settings, catalog: Catalog, tags: UpstreamTags) -> ReleaseForceScheduler:
    names = catalog.names()
    return ReleaseForceScheduler(
        name="force-release", builderNames=[RELEASE], list_versions=tags.forceable,
        buttonName="Release", label="Build and publish vLLM releases",
        reason=util.StringParameter(name="reason", label="Reason", default="manual release", size=40),
        properties=[
            _Checked("versions", _check_version, label="vLLM versions (0.11.2 | 0.11.0-0.12.0 | mix)",
                     required=True, size=50),
            _Checked("python_versions", _check_pythons, label="Python versions (auto | 3.11,3.12 | 3.10-3.13)",
                     default=settings.build.python_versions, size=20),
            util.ChoiceStringParameter(name="variants", label="Variants", choices=names, default=names,
                                       multiple=True, strict=True),
            util.ChoiceStringParameter(name="arches", label="Platforms", choices=list(ARCHES),
                                       default=list(ARCHES), multiple=True, strict=True),
            _Checked("postfix", specs.normalize_postfix, label="Version postfix (.post1 .dev1 a1 b1 rc1)",
                     default="", size=10),
            util.BooleanParameter(name="dry_run", label="Dry run (everything but the upload)", default=False),
            util.BooleanParameter(name="skip_upload", label="Skip upload", default=False),
        ],
    )


def make_schedulers(settings: Settings, catalog: Catalog, tags: UpstreamTags) -> list:
    out: list = [
        # Tags from the poller (branch = refs/tags/...) and the change hook.
        schedulers.AnyBranchScheduler(
            name="release-tags", builderNames=[RELEASE], treeStableTimer=None,
            change_filter=util.ChangeFilter(branch_fn=is_release_ref(tags)),
        ),
        schedulers.Triggerable(name="release-trigger", builderNames=[RELEASE]),
        make_force(settings, catalog, tags),
        schedulers.ForceScheduler(name="recheck-now", builderNames=[RECHECK], buttonName="Re-check now",
                                  label="Re-check upstream tags against the index", properties=[]),
    ]
    if settings.upstream.recheck_interval:
        out.append(schedulers.Periodic(name="recheck-periodic", builderNames=[RECHECK],
                                       periodicBuildTimer=settings.upstream.recheck_interval))
    for v, a in catalog.builds():
        out.append(schedulers.Triggerable(name=trigger_name(v.package, a), builderNames=[builder_name(v.package, a)]))
    return out


def make_change_sources(settings: Settings) -> list:
    # No poll at launch: Buildbot starts change sources before the schedulers
    # are active, so tags pushed while the master was down would be recorded
    # as changes that no scheduler ever sees (measured on 4.3).  The first
    # poll comes one interval later; the periodic re-check runs at start-up.
    return [changes.GitPoller(
        repourl=settings.upstream.url, only_tags=True, buildPushesWithNoCommits=True,
        pollInterval=settings.upstream.poll_interval, pollAtLaunch=False, workdir="gitpoller-upstream", project="vllm",
    )]
