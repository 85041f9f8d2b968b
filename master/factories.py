"""Build factories: the release orchestration and one variant × arch build."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from buildbot.plugins import util
from buildbot.process.factory import BuildFactory
from buildbot.process.results import SKIPPED
from buildbot.steps.shell import ShellCommand
from buildbot.steps.source.git import Git
from buildbot.steps.transfer import FileDownload, StringDownload

from farm import published
from farm.names import IMAGES_TRIGGER, RELEASE, builder_name, reproduce_trigger
from farm.settings import REPO_ROOT, Settings
from master.tags import UpstreamTags
from steps import images, publish, publisher, release, reproduce, toolchain
from steps.ship import ShipToolchain
from steps.title import BuildTitle
from steps.trusted import TrustedBuild
from vllm_cpu_build.variants import Variant, load

# Absolute worker paths (the toolchain runs with cwd = the builder directory).
SRC = util.Interpolate("%(prop:builddir)s/src")
OUT = util.Interpolate("%(prop:builddir)s/out")

# Properties a release passes to every variant build it triggers.
RELEASE_PROPS = ["version", "tag", "postfix", "dry_run", "skip_upload"]
# What makes two release requests the same release (None/absent = the default).
SAME_RELEASE = ["postfix", "dry_run", "skip_upload", "variants", "arches", "python_versions", "use_highest_postfix"]
# Properties the images builder gets from the release that triggers it.
IMAGES_PROPS = ["version", "tag", "postfix", "use_highest_postfix", "variants"]


class Factory(BuildFactory):
    """Every builder's factory: builds start with trusted properties only (farm/inputs.py)."""

    buildClass = TrustedBuild


def _not_duplicate(step) -> bool:
    return not step.getProperty("duplicate_of")


def opt(flag: str, prop: str) -> util.Renderer:
    """``[flag, value]`` when the property is set and non-empty, else nothing."""

    @util.renderer
    def render(props):
        val = props.getProperty(prop)
        return [flag, ",".join(val) if isinstance(val, list) else str(val)] if val else []

    return render


def args(*parts) -> util.Renderer:
    """Render a list of strings and list-renderers into one flat argument list."""

    @util.renderer
    def render(props):
        def flat(items):
            out = []
            for p in items:
                out.extend(flat(p) if isinstance(p, list | tuple) else [p])
            return out

        d = props.render(list(parts))
        return d.addCallback(flat)

    return render


def checkout(settings: Settings, **kwargs) -> Git:
    return Git(**kwargs,
        name="checkout_tag", repourl=settings.upstream.url, branch=util.Property("tag"),
        alwaysUseLatest=True, mode="full", method="clobber", workdir="src", logEnviron=False,
        haltOnFailure=True, progress=False,
        # Buildbot's default says "update" for a fresh clone of a tag.
        description=util.Interpolate("checking out %(prop:tag)s"),
        descriptionDone=util.Interpolate("checked out %(prop:tag)s"),
    )


def ship_toolchain(tarball: Path, **kwargs) -> list:
    return [ShipToolchain(tarball, **kwargs)]  # sent once per worker and revision (steps/ship.py)


def release_factory(settings: Settings, tarball: Path, schedulers_for: dict[tuple[str, str], str],
                    tags: UpstreamTags) -> BuildFactory:
    check = functools.partial(_check_published, settings.index.simple_url)
    f = Factory()
    f.addStep(release.ResolveRelease(tag_version=tags.version_of, tag_for=tags.tag_for, haltOnFailure=True))
    f.addStep(BuildTitle())  # "vLLM 0.12.0 (dry run)" in the build's summary on every page
    # Buildbot's "Rebuild" of a release build: only its failed variant builds.
    f.addStep(release.RebuildFailed(hideStepIf=lambda results, step: results == SKIPPED))
    f.addStep(release.SkipDuplicateRelease(
        tag_version=tags.version_of, same_release=SAME_RELEASE, release_builder=RELEASE,
        hideStepIf=lambda results, step: not step.getProperty("duplicate_of")))
    # Every later step: skipped when the check found an older request for this release.
    go = {"doStepIf": _not_duplicate}
    f.addStep(checkout(settings, **go))
    f.addSteps(ship_toolchain(tarball, **go))
    f.addStep(toolchain.PlanRelease(**go, cli_args=args(
        "--src", SRC, "--version", util.Property("version"),
        opt("--variants", "variants"), opt("--arches", "arches"), opt("--version-postfix", "postfix"),
        "--python-versions", util.Property("python_versions", default=settings.build.python_versions),
    )))
    f.addStep(release.DropPublished(check=check, builder_for=builder_name, haltOnFailure=True, **go))
    # alwaysUseLatest=False: the variant builds get the release's source stamp (the tag's
    # commit), so the console and grid views list them with the tag's change.
    f.addStep(release.FanOut(**go, alwaysUseLatest=False, schedulerNames=sorted(schedulers_for.values()),
                             scheduler_for=lambda variant, arch: schedulers_for[(variant, arch)],
                             builder_for=builder_name,
                             common_props=RELEASE_PROPS))
    f.addSteps(publish_steps(settings, _publishing))
    return f


def _publishing(step) -> bool:
    return _not_duplicate(step) and not (step.getProperty("dry_run") or step.getProperty("skip_upload"))


def _packages_for(version: str) -> list[str]:
    return [v.package for v in load().for_release(version)]


def image_refs(settings: Settings) -> functools.partial:
    return functools.partial(_image_refs, settings.images.repositories)


def _image_refs(repositories: tuple[str, ...], package: str, version: str) -> list[str]:
    tag = load().get(package).docker_tags(version)[0]
    return [f"{repo}:{tag}" for repo in repositories]


def publish_steps(settings: Settings, do_step_if: Any, **kwargs: Any) -> list:
    """GitHub release and images from what the index has, when ``do_step_if``: after a release's
    uploads (whatever fan_out's result), or after a variant build that uploaded after its release."""
    out: list = []
    kwargs["doStepIf"] = do_step_if
    gh = settings.github
    if gh.enabled:
        out.append(publish.GitHubRelease(
            api_url=gh.api_url, repository=gh.repository, token=util.Secret(gh.token_secret),
            simple_url=settings.index.simple_url, torch_index_url=load().project["torch_index_url"],
            packages_for=_packages_for, builder_for=builder_name, attach_wheels=gh.attach_wheels,
            images=image_refs(settings) if settings.images.enabled else None, **kwargs,
        ))
    if settings.images.enabled:
        out.append(images.TriggerImages(
            packages_for=_packages_for, find=functools.partial(published.trusted, settings.index.simple_url),
            schedulerNames=[IMAGES_TRIGGER], set_properties={p: util.Property(p) for p in IMAGES_PROPS}, **kwargs,
        ))
    return out


def images_factory(settings: Settings, tarball: Path) -> BuildFactory:
    """The ``images`` builder: ship the toolchain and the Dockerfile, one ``image`` step per package."""
    im = settings.images
    f = Factory()
    f.addSteps(ship_toolchain(tarball))
    for name, mode in (("Dockerfile", None), ("entrypoint.sh", 0o755)):
        f.addStep(FileDownload(name=f"ship_{name}", mastersrc=str(REPO_ROOT / "docker" / name),
                               workerdest=f"docker/{name}", workdir=".", mode=mode, haltOnFailure=True))
    image_args = ["--simple-url", settings.index.simple_url, "--base-image", im.base_image,
                  "--dockerfile", "docker/Dockerfile", "--context", "docker"]
    for repo in im.repositories:
        image_args += ["--repository", repo]
    if im.torch_index_url:
        image_args += ["--torch-index-url", im.torch_index_url]
    if not im.tls_verify:
        image_args.append("--no-tls-verify")
    if im.auth_secret:
        # The registries' auth.json: a 0600 file for the run only, never on a command line.
        f.addStep(StringDownload(util.Secret(im.auth_secret), workerdest="registry-auth.json", workdir=".",
                                 mode=0o600, name="registry_credentials", haltOnFailure=True))
        image_args += ["--authfile", "registry-auth.json"]
    f.addStep(images.QueueImages(packages_for=_packages_for, image_args=image_args,
                                 find=functools.partial(published.trusted, settings.index.simple_url)))
    if im.auth_secret:
        f.addStep(ShellCommand(name="forget_credentials", command=["rm", "-f", "registry-auth.json"], workdir=".",
                               alwaysRun=True, logEnviron=False))
    return f


def _check_published(simple_url: str, builds: list[dict], version: str, include_posts: bool, ledger, foreign: list):
    return published.filter_published(builds, simple_url, version, include_posts, ledger=ledger, foreign=foreign)


def root(default: str) -> util.Renderer:
    """``--root`` for this worker: its registry build_root, else the settings' root for the arch."""

    @util.renderer
    def render(props):
        chosen = props.getProperty("worker_build_root") or default
        return ["--root", chosen] if chosen else []

    return render


def _patched_tree(settings: Settings, tarball: Path, variant: Any, arch: str) -> tuple[list[Any], list[Any]]:
    """Title, checkout, toolchain and patch steps, and the ``build`` arguments for that tree.

    The variant builder and the reproduce builder share them: a rebuild must start from
    exactly the tree the first build compiled.
    """
    steps = [BuildTitle(),  # "vllm-cpu 0.12.0 x86_64 (dry run)" in the build's summary on every page
             checkout(settings), *ship_toolchain(tarball),
             toolchain.PatchSource(cli_args=args(
                 "--variant", variant, "--src", SRC, "--arch", arch,
                 opt("--version-postfix", "postfix"), opt("--python-versions", "pythons"),
             ))]
    build_args = ["--variant", variant, "--src", SRC, "--out", OUT, *settings.build.build_args(),
                  root(settings.build.root_for(arch))]
    return steps, build_args


def variant_factory(settings: Settings, tarball: Path, variant: Variant, arch: str) -> BuildFactory:
    pkg = variant.package
    f = Factory()
    steps, build_args = _patched_tree(settings, tarball, pkg, arch)
    f.addSteps(steps)
    f.addStep(toolchain.QueueWheelBuilds(build_args=build_args, smoke_args=settings.build.smoke_args(),
                                         cache=settings.cache))
    # Build and publish apart: the worker ran upstream's code and never gets the index token. Its
    # wheels travel to the master with the sha256 the build recorded; the master verifies exactly
    # those bytes with its own toolchain and uploads them (steps/publisher.py). Both skip (visibly,
    # on the build's summary too) in a dry run or with skip upload.
    f.addStep(publisher.FetchWheels(package=pkg, hideStepIf=lambda results, step: results == SKIPPED))
    if settings.build.reproduce:
        # After verify and smoke, before upload: the same wheels again, elsewhere; identical or nothing is published.
        f.addStep(reproduce.ReproduceWheels(scheduler=reproduce_trigger(arch)))
    f.addStep(publisher.PublishWheels(
        variant=pkg, repository_url=settings.index.upload_url, simple_url=settings.index.simple_url,
        username=settings.index.username, token=util.Secret(settings.index.token_for(variant.short)),
    ))
    # A build that waited for a worker after its release finished publishes on its own.
    f.addSteps(publish_steps(settings, publish.uploaded_after_release,
                             hideStepIf=lambda results, step: results == SKIPPED))
    return f


def reproduce_factory(settings: Settings, tarball: Path, arch: str) -> BuildFactory:
    """The ``reproduce-<arch>`` builder: the triggering variant build's wheels again, compared on the master."""
    f = Factory()
    steps, build_args = _patched_tree(settings, tarball, util.Property("variant"), arch)
    f.addSteps(steps)
    f.addStep(reproduce.QueueRebuilds(build_args=build_args))
    f.addStep(reproduce.FetchRebuilt())
    f.addStep(reproduce.CompareRebuilt())
    return f


def recheck_factory(settings: Settings, release_trigger: str, tags: UpstreamTags) -> BuildFactory:
    since = settings.upstream.recheck_since

    def applicable(version: str) -> list[dict]:
        """The variant × arch builds variants.json and the upstream table want for ``version``."""
        from vllm_cpu_build import upstream
        from vllm_cpu_build.variants import load

        out = []
        for v in load().for_release(version):
            for arch in v.arches:
                try:
                    upstream.build_env(v, arch, version)
                except upstream.UnsupportedRelease:
                    continue
                out.append({"variant": v.package, "arch": arch, "pythons": [], "abi3": True})
        return out

    def find_missing(plans: dict[str, list[dict]], ledger) -> list[published.MissingBuild]:
        from packaging.version import Version

        from vllm_cpu_build.variants import load

        first = Version(since or load().project["first_release"])
        releases = {v: t for v, t in tags.list().items() if Version(v) >= first}
        return published.missing_builds(settings.index.simple_url, releases, applicable, plans, ledger=ledger)

    f = Factory()
    f.addStep(release.Recheck(schedulerNames=[release_trigger], find_missing=find_missing, release_builder=RELEASE,
                              builder_for=builder_name, max_attempts=settings.upstream.recheck_attempts))
    return f
