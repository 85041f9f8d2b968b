"""Schedulers: upstream tags, the force form, variant triggers and the re-check."""

from __future__ import annotations

import functools
from collections.abc import Callable

from buildbot.plugins import changes, schedulers, util
from buildbot.schedulers.forcesched import (
    BaseParameter,
    BooleanParameter,
    ChoiceStringParameter,
    CollectedValidationError,
    FixedParameter,
    IntParameter,
    NestedParameter,
    ValidationError,
    ValidationErrorCollector,
)
from twisted.internet import defer, threads

from farm import published
from farm.names import IMAGES, IMAGES_TRIGGER, RECHECK, RELEASE, builder_name, trigger_name
from farm.settings import Settings
from master.tags import UpstreamTags
from steps import custody
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
    """The toolchain's own parser; the build gets the normalised list (``3.10,3.11``) or ``auto``."""
    pythons = specs.parse_pythons(s)
    return ",".join(pythons) if pythons else "auto"


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _leaf_fields(params: list[BaseParameter]) -> dict[str, BaseParameter]:
    """Every field of the form by the name a request uses (``fullName``), nested groups flattened."""
    out: dict[str, BaseParameter] = {}
    for p in params:
        if isinstance(p, NestedParameter):
            out.update(_leaf_fields(list(p.fields or [])))
        elif p.fullName:
            out[p.fullName] = p
    return out


def strict_errors(fields: dict[str, BaseParameter], kwargs: dict) -> dict[str, str]:
    """Type errors of a force request, per field: what Buildbot's parameters would coerce or ignore.

    Buildbot takes ``"false"`` for false, the first item of a list given for a
    text field, the defaults for an empty list, and ignores unknown fields.
    Here: booleans only as JSON booleans, text only as text, lists non-empty
    without duplicates and of known choices, no unknown field.
    """
    errors: dict[str, str] = {}
    for name, value in kwargs.items():
        field = fields.get(name)
        if field is None:
            errors[name] = f"unknown field; this form takes: {', '.join(sorted(fields))}"
        elif isinstance(field, BooleanParameter):
            if not isinstance(value, bool):
                errors[name] = f"must be true or false (a JSON boolean), got {_type_name(value)} {value!r}"[:200]
        elif isinstance(field, ChoiceStringParameter) and field.multiple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors[name] = f"must be a list of names, got {_type_name(value)}"
            elif not value:
                errors[name] = f"empty list; name at least one of: {', '.join(field.choices)}"
            elif len(set(value)) != len(value):
                twice = sorted({v for v in value if value.count(v) > 1})
                errors[name] = f"{', '.join(twice)} named more than once"
            elif unknown := [v for v in value if v not in field.choices]:
                errors[name] = f"unknown: {', '.join(unknown)}; choose from {', '.join(field.choices)}"[:300]
        elif isinstance(field, IntParameter):
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isascii()
                                                                          and value.lstrip("-").isdigit())):
                errors[name] = f"must be a whole number, got {_type_name(value)}"
        elif isinstance(field, FixedParameter):
            if value not in ("", field.default):
                errors[name] = "fixed; cannot be set"
        elif not isinstance(value, str):
            errors[name] = f"must be text, got {_type_name(value)}"
    return errors


class StrictForceScheduler(schedulers.ForceScheduler):
    """Buildbot's ``ForceScheduler`` that checks a request as a whole before anything is queued.

    Field types first (``strict_errors``), then every field through
    Buildbot's own parameters (``validate``: the values the build gets);
    ``ReleaseForceScheduler`` adds the versions and the build count.  Any
    error is an HTTP 400 naming the field and queues nothing; the answer
    holds every field's error at once (``validate_rest``), which the web
    form shows next to each field (styled by ``master/uistyle.py``).  No
    branch/revision/repository/project fields: the tag comes from the
    upstream, never from a request.
    """

    def __init__(self, name: str, builderNames: list[str], **kwargs) -> None:
        kwargs.setdefault("codebases", [util.CodebaseParameter("", hide=True, branch=None, revision=None,
                                                               repository=None, project=None)])
        super().__init__(name=name, builderNames=builderNames, **kwargs)

    @defer.inlineCallbacks
    def _check_builder(self, builderNames, builderid):
        # Buildbot answers an unknown builder with a 500; say which ones exist.
        if builderid is not None:
            builder = None
            if isinstance(builderid, int) and not isinstance(builderid, bool) or (
                    isinstance(builderid, str) and builderid.isascii() and builderid.isdigit()):
                builder = yield self.master.data.get(("builders", int(builderid)))
            if not builder or builder["name"] not in self.builderNames:
                raise CollectedValidationError({
                    "builderid": f"no builder {builderid!r} for this scheduler; it starts: "
                                 + ", ".join(self.builderNames)})
        if builderNames is not None and (not isinstance(builderNames, list)
                                         or not set(map(str, builderNames)) <= set(self.builderNames)):
            unknown = sorted(set(map(str, builderNames)) - set(self.builderNames)) if isinstance(
                builderNames, list) else [repr(builderNames)]
            raise CollectedValidationError({"builderNames": f"unknown builder(s) {', '.join(unknown)}; "
                                                            f"this scheduler starts: {', '.join(self.builderNames)}"})

    @defer.inlineCallbacks
    def validate(self, kwargs: dict):
        """The properties the build would get; CollectedValidationError (-> HTTP 400) for any bad field."""
        collector = ValidationErrorCollector()
        listed = {k: list(v) if isinstance(v, list) else [v] for k, v in kwargs.items()}
        for param in (self.reason, self.username, self.forced_priority):
            yield collector.collectValidationErrors(param.fullName, param.getFromKwargs, dict(listed))
        props, _, _ = yield self.gatherPropertiesAndChanges(collector, **listed)
        collector.maybeRaiseCollectedErrors()
        return props

    @defer.inlineCallbacks
    def validate_rest(self, kwargs: dict, errors: dict[str, str]):
        """(properties or None, every field's error): ``validate`` of the fields without an error yet.

        A field that already failed is left out (its default is checked
        instead), so one request answers with the errors of all its fields,
        each under its own name: the web form shows each next to its field.
        """
        try:
            props = yield self.validate({k: v for k, v in kwargs.items() if k not in errors})
        except CollectedValidationError as exc:
            return None, {**{str(k): str(v) for k, v in exc.errors.items()}, **errors}
        return props, errors

    @defer.inlineCallbacks
    def force(self, owner, builderNames=None, builderid=None, **kwargs):
        yield self._check_builder(builderNames, builderid)
        _, errors = yield self.validate_rest(kwargs, strict_errors(_leaf_fields(self.all_fields), kwargs))
        if errors:
            raise CollectedValidationError(errors)
        res = yield super().force(owner, builderNames=builderNames, builderid=builderid, **kwargs)
        return res


class ReleaseForceScheduler(StrictForceScheduler):
    """The release form: ``versions`` is expanded against upstream tags, one release per version.

    On top of ``StrictForceScheduler``: the versions must be upstream release
    tags, and the request must start at least one and at most ``max_builds``
    variant builds.  Then Buildbot's own ``force`` runs once per version
    with that single version.
    """

    def checkConfig(self, builderNames, list_versions=None, catalog=None, max_builds=100, **kwargs):
        super().checkConfig(builderNames, **kwargs)

    def reconfigService(self, builderNames, list_versions=None, catalog=None, max_builds=100, **kwargs):
        self.list_versions = list_versions
        self.catalog = catalog
        self.max_builds = max_builds
        return super().reconfigService(builderNames, **kwargs)

    @defer.inlineCallbacks
    def _expand(self, spec: str):
        try:
            specs.parse_version_spec(spec)
            available = yield threads.deferToThread(self.list_versions)
        except specs.SpecError as exc:
            raise CollectedValidationError({"versions": str(exc)}) from None
        except Exception as exc:
            raise CollectedValidationError({"versions": f"cannot list upstream tags: {exc}"}) from None
        try:
            return specs.expand_versions(spec, available)
        except specs.SpecError as exc:
            raise CollectedValidationError({"versions": str(exc)}) from None

    def _count_builds(self, versions: list[str], variants: list[str], arches: list[str]) -> dict[str, str]:
        """Errors for a request that would start no variant build, or more than ``max_builds``."""
        if self.catalog is None:
            return {}
        total = 0
        for version in versions:
            total += sum(1 for v in self.catalog.for_release(version) if v.package in variants
                         for a in v.arches if a in arches)
        if total == 0:
            return {"variants": f"nothing to build: {', '.join(variants)} on {', '.join(arches)} has no build "
                                f"for {', '.join(versions)}"}
        if total > self.max_builds:
            return {"versions": f"{len(versions)} version(s) would start {total} variant builds, over "
                                f"www.max_builds_per_request ({self.max_builds}); force fewer versions at once"}
        return {}

    @defer.inlineCallbacks
    def force(self, owner, builderNames=None, builderid=None, **kwargs):
        yield self._check_builder(builderNames, builderid)
        errors = strict_errors(_leaf_fields(self.all_fields), kwargs)
        if "versions" not in errors and not str(kwargs.get("versions") or "").strip():
            errors["versions"] = "no version given (examples: 0.11.2 | 0.11.0-0.12.0 | 0.10.0, 0.11.0-0.11.2)"
        chosen: list[str] = []
        if "versions" not in errors:
            try:
                chosen = yield self._expand(kwargs["versions"])
            except CollectedValidationError as exc:
                errors.update(exc.errors)
        # Every other field is checked too: all errors in one answer, not one per submit.
        props, errors = yield self.validate_rest({**kwargs, "versions": chosen[0] if chosen else ""}, errors)
        if not errors:
            errors = self._count_builds(chosen, props.getProperty("variants"), props.getProperty("arches"))
        if errors:
            raise CollectedValidationError(errors)
        results = []
        for version in chosen:
            res = yield schedulers.ForceScheduler.force(self, owner, builderNames=builderNames, builderid=builderid,
                                                        **{**kwargs, "versions": version})
            results.append(res)
        # The web UI expects one (bsid, brids); REST callers find every buildset via the API.
        return results[0]


class ImagesForceScheduler(StrictForceScheduler):
    """The images form: refuses a version the index has no wheel of (no build that would push nothing)."""

    def checkConfig(self, builderNames, packages_for=None, find=None, **kwargs):
        super().checkConfig(builderNames, **kwargs)

    def reconfigService(self, builderNames, packages_for=None, find=None, **kwargs):
        self.packages_for = packages_for  # version -> packages built for it (variants.json)
        self.find = find  # (packages, version, highest .postN) -> package -> version on the index
        return super().reconfigService(builderNames, **kwargs)

    @defer.inlineCallbacks
    def validate(self, kwargs: dict):
        props = yield super().validate(kwargs)
        if self.find is None or self.packages_for is None:
            return props
        version, chosen = props.getProperty("version"), props.getProperty("variants") or []
        highest = bool(props.getProperty("use_highest_postfix"))
        packages = [p for p in self.packages_for(version) if not chosen or p in chosen]
        if not packages:
            raise CollectedValidationError({"variants": f"none of {', '.join(chosen)} is built for {version}"})
        try:
            found = yield threads.deferToThread(self.find, packages, version, highest, custody.blocking(self.master))
        except Exception as exc:
            raise CollectedValidationError({"version": f"cannot read the index: {exc}"}) from None
        if not found:
            post = " or a .postN of it" if highest else ""
            raise CollectedValidationError({"version": f"the index has no wheel of {version}{post} for "
                                                       f"{', '.join(packages)} built by this farm: no image to "
                                                       "build"})
        return props


# One line of help per field of the force form (the "?" next to its label in the web UI).
FORCE_HELP = {
    "reason": "Why: shown with the build, in the release mail and on IRC.",
    "username": "Your name <email>, recorded as the builds' owner (with a login, the logged-in user).",
    "versions": "One upstream release (0.11.2), a range of release tags (0.11.0-0.12.0) or a comma list of "
                "both; each version gets its own release build.",
    "python_versions": "auto: what the release supports (one cpXY-abi3 wheel for the Pythons from the stable ABI "
                       "its modules need, one per older Python); or a list 3.11,3.12 or a range 3.10-3.13.",
    "variants": "Packages of variants.json; one that a version is not built for (its releases) is skipped.",
    "arches": "x86_64 and/or aarch64: each build waits for a worker of its platform.",
    "postfix": "Publish as <version><postfix>: .post1 for a fixed re-release, .dev1 a1 b1 rc1 for a "
               "pre-release; empty = the upstream version.",
    "dry_run": "Builds, verifies and smoke-tests every planned wheel, even one the index has, and uploads "
               "nothing: a rehearsal, marked as a dry run in the matrix and the mails.",
    "skip_upload": "A real release that stops before publishing: what the index has is skipped as usual, the "
                   "other wheels are built and checked but not uploaded. With dry run, dry run wins.",
    "use_highest_postfix": "For the GitHub release and the images: take each package's highest .postN of the "
                           "version on the index (0.11.2 -> 0.11.2.post3), not the version itself.",
}


def make_force(settings: Settings, catalog: Catalog, tags: UpstreamTags) -> ReleaseForceScheduler:
    names = catalog.names()
    # No branch/revision/repository/project fields (StrictForceScheduler) and one
    # queue order for all releases: no priority field either.
    return ReleaseForceScheduler(
        name="force-release", builderNames=[RELEASE], list_versions=tags.forceable, catalog=catalog,
        max_builds=settings.www.max_builds_per_request,
        buttonName="Release", label="Build and publish vLLM releases",
        priority=util.IntParameter(name="priority", default=0, hide=True),
        username=util.UserNameParameter(label="Your name", tooltip=FORCE_HELP["username"]),
        reason=util.StringParameter(name="reason", label="Reason", default="manual release", size=40, maxsize=500,
                                    tooltip=FORCE_HELP["reason"]),
        properties=[
            _Checked("versions", _check_version, label="vLLM versions", required=True, size=50, maxsize=500,
                     tooltip=FORCE_HELP["versions"]),
            _Checked("python_versions", _check_pythons, label="Python versions",
                     default=settings.build.python_versions, size=20, maxsize=200,
                     tooltip=FORCE_HELP["python_versions"]),
            util.ChoiceStringParameter(name="variants", label="Packages", choices=names, default=names,
                                       multiple=True, strict=True, tooltip=FORCE_HELP["variants"]),
            util.ChoiceStringParameter(name="arches", label="Platforms", choices=list(ARCHES),
                                       default=list(ARCHES), multiple=True, strict=True,
                                       tooltip=FORCE_HELP["arches"]),
            _Checked("postfix", specs.normalize_postfix, label="Version postfix", default="", size=10, maxsize=50,
                     tooltip=FORCE_HELP["postfix"]),
            util.BooleanParameter(name="dry_run", label="Dry run: build and check everything, publish nothing",
                                  default=False, tooltip=FORCE_HELP["dry_run"]),
            util.BooleanParameter(name="skip_upload", label="Skip upload: a real release that stops before "
                                  "publishing", default=False, tooltip=FORCE_HELP["skip_upload"]),
            util.BooleanParameter(name="use_highest_postfix", default=False, tooltip=FORCE_HELP["use_highest_postfix"],
                                  label="Use the highest .postN on the index for the GitHub release and images"),
        ],
    )


def make_images_force(catalog: Catalog, find: Callable | None = None) -> StrictForceScheduler:
    """Rebuild and push the images of one version (e.g. after a .postN re-release), without a release."""
    names = catalog.names()
    return ImagesForceScheduler(
        name="force-images", builderNames=[IMAGES], buttonName="Build images",
        label="Build and push the runtime images of a published version",
        packages_for=lambda version: [v.package for v in catalog.for_release(version)], find=find,
        priority=util.IntParameter(name="priority", default=0, hide=True),
        reason=util.StringParameter(name="reason", label="Reason", default="manual images", size=40, maxsize=500,
                                    tooltip=FORCE_HELP["reason"]),
        properties=[
            _Checked("version", _check_version, label="vLLM version", required=True, size=20, maxsize=50,
                     tooltip="One published version (0.12.0); its images are built from the wheels on the index."),
            util.ChoiceStringParameter(name="variants", label="Packages", choices=names, default=names,
                                       multiple=True, strict=True, tooltip=FORCE_HELP["variants"]),
            util.BooleanParameter(name="use_highest_postfix", default=True, tooltip=FORCE_HELP["use_highest_postfix"],
                                  label="Use the highest .postN of the version on the index"),
        ],
    )


def make_schedulers(settings: Settings, catalog: Catalog, tags: UpstreamTags) -> list:
    out: list = [
        # Tags from the poller (branch = refs/tags/vX) and the signed webhook (branch = vX).
        schedulers.AnyBranchScheduler(
            name="release-tags", builderNames=[RELEASE], treeStableTimer=None,
            change_filter=util.ChangeFilter(branch_fn=is_release_ref(tags)),
        ),
        schedulers.Triggerable(name="release-trigger", builderNames=[RELEASE]),
        make_force(settings, catalog, tags),
        StrictForceScheduler(name="recheck-now", builderNames=[RECHECK], buttonName="Re-check now",
                             label="Re-check upstream tags against the index", properties=[]),
    ]
    if settings.images.enabled:
        out += [schedulers.Triggerable(name=IMAGES_TRIGGER, builderNames=[IMAGES]), make_images_force(
            catalog, functools.partial(published.trusted, settings.index.simple_url))]
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
