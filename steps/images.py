"""The runtime images: which packages get one, and the ``images`` builder's steps.

``TriggerImages`` (after a release's uploads, or after a late variant
build's) starts the ``images`` builder for the packages the index really
has a wheel of; with none it triggers nothing and says why.
``QueueImages`` + ``BuildImage`` are the ``images`` builder: one
``vllm-cpu-build image`` per package on a worker with buildah, given only
this farm's wheels (custody ledger, ``--custody-only``).  An images build
that pushes nothing is never SUCCESS: it ends WARNINGS with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from buildbot.process import buildstep
from buildbot.steps.trigger import Trigger
from twisted.internet import defer, threads

from farm.custody import Ledger
from farm.states import FAILURE, SKIPPED, SUCCESS, WARNINGS
from steps import custody
from steps.attached import Attached
from steps.publish import wanted_version
from steps.summary import BuildSummary, OwnTriggerSummary
from steps.toolchain import ToolchainStep
from vllm_cpu_build.results import ImageResult, Result

# (packages, version, highest .postN wanted, the custody ledger) -> package -> (version, wheels, newest) of
# this farm's wheels on the index (``farm.published.trusted``); packages without one are absent.
Finder = Callable[[list[str], str, bool, Ledger], dict[str, Any]]


def chosen_packages(props: Any, packages_for: Callable[[str], list[str]], own: bool = False) -> list[str]:
    """The packages built for the version, restricted to the release's ``variants`` when given; ``own``:
    to the variant build's own package (a build that uploaded after its release: only its image is new)."""
    own_variant = props.getProperty("variant") if own else None
    chosen = [own_variant] if own_variant else props.getProperty("variants") or []
    return [p for p in packages_for(str(props.getProperty("version"))) if not chosen or p in chosen]


class TriggerImages(Attached, OwnTriggerSummary, Trigger):
    """Trigger the ``images`` builder for the packages with a wheel of the version on the index, or nothing."""

    name = "trigger_images"

    def __init__(self, packages_for: Callable[[str], list[str]], find: Finder, **kwargs: Any) -> None:
        self.packages_for = packages_for  # version -> packages built for it (variants.json)
        self.find = find
        kwargs.setdefault("waitForFinish", False)
        kwargs.setdefault("alwaysUseLatest", True)
        super().__init__(**kwargs)
        self._packages: list[str] = []

    def getSchedulersAndProperties(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = super().getSchedulersAndProperties()
        for s in out:
            s["props_to_set"] = {**s["props_to_set"], "variants": list(self._packages)}
        return out

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        version, highest = wanted_version(self)
        wanted = chosen_packages(self, self.packages_for, own=True)
        try:
            found = yield threads.deferToThread(self.find, wanted, version, highest, custody.blocking(self.master))
        except Exception as exc:  # IndexUnusable, requests errors: no images, and say why
            self.descriptionDone = f"no images: the index is not reachable: {exc}"[:200]
            return FAILURE
        self._packages = [p for p in wanted if p in found]
        if not self._packages:
            self.descriptionDone = f"no images: the index has no wheel of {version}"
            return SKIPPED
        res: int = yield super().run()
        self.descriptionDone = f"images of {version}: {', '.join(self._packages)}"[:200]
        return res


class QueueImages(BuildSummary, Attached, buildstep.BuildStep):
    """Add one ``image`` step per package of the version that the index has a wheel of.

    The build's title names the version and the packages; packages without
    a wheel are named too, and a build left with nothing to push ends WARNINGS.
    """

    name = "images_to_build"

    def __init__(self, packages_for: Callable[[str], list[str]], image_args: list[Any], find: Finder,
                 **kwargs: Any) -> None:
        self.packages_for = packages_for  # version -> packages built for it (variants.json)
        self.image_args = image_args  # common arguments of every image step
        self.find = find
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        version, highest = wanted_version(self)
        post = " (highest .postN)" if highest else ""
        packages = chosen_packages(self, self.packages_for)
        if not packages:
            self.descriptionDone = self.build_summary = f"images {version}: no package is built for it"
            return WARNINGS
        try:
            found = yield threads.deferToThread(self.find, packages, version, highest, custody.blocking(self.master))
        except Exception as exc:
            self.descriptionDone = self.build_summary = f"images {version}: the index is not reachable: {exc}"[:200]
            return FAILURE
        missing = [p for p in packages if p not in found]
        present = [p for p in packages if p in found]
        if not present:
            text = f"images {version}{post}: nothing to push, no wheel on the index"
            self.descriptionDone = self.build_summary = text
            return WARNINGS
        args = ["--version", version, *(["--highest-postfix"] if highest else []), *self.image_args]
        # Only the farm's own wheels, pinned by sha256: a foreign file on the index never makes an image.
        self.build.addStepsAfterCurrentStep([BuildImage(package=p, cli_args=[
            *args, "--custody-only", *(f"--custody={w.filename}={w.sha256}" for w in found[p][1])]) for p in present])
        self.build_summary = f"images {version}{post}: {', '.join(present)}"
        self.descriptionDone = f"{len(present)} image(s) of {version}{post}"
        if missing:
            self.descriptionDone += f"; no wheel on the index: {', '.join(missing)}"
            return WARNINGS
        return SUCCESS


class BuildImage(BuildSummary, ToolchainStep):
    """``image``: build one package's image (every published arch) and push its tags; sets ``images``."""

    subcommand = "image"
    result_type = ImageResult

    def __init__(self, package: str, **kwargs: Any) -> None:
        self.package = package
        kwargs.setdefault("name", f"image_{package}"[:50])
        kwargs.setdefault("haltOnFailure", False)  # one package's failure does not stop the others
        super().__init__(**kwargs)

    def command_args(self) -> list[str]:
        return ["--package", self.package, *super().command_args()]

    def failure_text(self, rc: int, result: Result | None) -> str:
        return f"{self.package}: " + super().failure_text(rc, result)

    def interpret(self, rc: int, result: ImageResult) -> int:
        if rc != result.exit_code:
            self.descriptionDone = self.failure_text(rc, None)
            return FAILURE
        if result.status == "nothing_published":
            self.descriptionDone = f"{self.package}: skipped: {result.reason}"[:200]
            self.build_summary = f"{self.package}: nothing pushed"
            return WARNINGS
        refs = [p.ref for p in result.pushed]
        images = dict(self.getProperty("images") or {})
        images[self.package] = refs
        self.setProperty("images", images, "image")
        repos = len(refs) // max(len(result.tags), 1)
        self.build_summary = ", ".join(result.tags)  # the build's title names every tag it pushed
        self.descriptionDone = (f"{self.package} {result.version} ({', '.join(result.arches)}): pushed "
                                f"{', '.join(result.tags)} to {repos} repositories")[:200]
        return SUCCESS
