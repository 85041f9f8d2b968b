"""After a release's uploads: the GitHub release and the runtime images.

``GitHubRelease`` (master side, in the ``release`` builder after ``fan_out``)
makes or updates the version's GitHub release from what the index holds of
this farm's output (``farm.custody``: a foreign file is never attached or
listed) and what this master's variant builds recorded.  ``QueueImages`` + ``BuildImage``
are the ``images`` builder: one ``vllm-cpu-build image`` per package on a
worker with buildah.  With ``use_highest_postfix`` both use the highest
``.postN`` the index has of the version (``0.12.0`` -> ``0.12.0.post3``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from buildbot.data import resultspec
from buildbot.process import buildstep
from twisted.internet import defer, threads

from farm import github_release
from farm.custody import Foreign, Ledger, describe, split
from farm.published import of_version
from farm.report import flatten, row_from_properties
from farm.states import FAILURE, OK, SKIPPED, SUCCESS, WARNINGS
from steps import custody
from steps.attached import Attached
from steps.toolchain import ToolchainStep
from vllm_cpu_build import index, published
from vllm_cpu_build.published import PublishedWheel
from vllm_cpu_build.results import ImageResult, Result
from vllm_cpu_build.specs import final_version
from vllm_cpu_build.variants import load

PYPI_SIMPLE = "https://pypi.org/simple"
# package -> (the version chosen on the index, its wheels, whether it is the package's newest release)
Index = dict[str, tuple[str, list[PublishedWheel], bool]]


def wanted_version(props: Any) -> tuple[str, bool]:
    """(version to look for on the index, whether its highest .postN is wanted) from a build's properties.

    An explicit postfix names the exact version; ``use_highest_postfix`` only applies without one.
    """
    version = str(props.getProperty("version"))
    postfix = props.getProperty("postfix") or ""
    if postfix:
        return final_version(version, postfix), False
    return version, bool(props.getProperty("use_highest_postfix"))


class GitHubRelease(Attached, buildstep.BuildStep):
    """Create or update the GitHub release of this version; attach its wheels (never twice)."""

    name = "github_release"
    renderables = ["token"]

    def __init__(self, api_url: str, repository: str, token: Any, simple_url: str, torch_index_url: str,
                 packages_for: Callable[[str], list[str]], builder_for: Callable[[str, str], str],
                 attach_wheels: bool = True, images: Callable[[str, str], list[str]] | None = None,
                 **kwargs: Any) -> None:
        self.api_url, self.repository, self.token = api_url, repository, token
        self.simple_url, self.torch_index_url = simple_url, torch_index_url
        self.packages_for = packages_for  # version -> packages built for it (variants.json)
        self.builder_for = builder_for  # (package, arch) -> variant builder name
        self.attach_wheels = attach_wheels
        self.images = images  # (package, version) -> image references the images builder pushes
        super().__init__(**kwargs)

    def _index(self, version: str, highest: bool, ledger: Ledger, foreign: list[Foreign]) -> Index:
        """package -> (chosen version, its wheels, whether it is the package's newest release); blocking.

        Only this farm's wheels (``ledger``); the foreign ones of ``version`` are appended to ``foreign``.
        """
        out: Index = {}
        for pkg in self.packages_for(version):
            listed = published.wheels(self.simple_url, pkg)
            ours, other = split([w.file for w in listed], ledger([w.filename for w in listed]))
            keep = {f.filename for f in ours}
            wheels = [w for w in listed if w.filename in keep]
            foreign += [f for f in other if of_version(f.file, version)]
            versions = {w.version for w in wheels}
            chosen = published.pick_version(versions, version, highest)
            if chosen:
                out[pkg] = (chosen, [w for w in wheels if w.version == chosen], published.is_newest(versions, chosen))
        return out

    @defer.inlineCallbacks
    def _build_of(self, package: str, arch: str, version: str,
                  filename: str) -> Generator[Any, Any, tuple[dict[str, Any] | None, str, str]]:
        """(properties, build URL, worker) of this master's newest good build that made ``filename``, or Nones."""
        try:
            updates: Any = self.master.data.updates  # its methods are registered at run time, by resource type
            builder_id = yield updates.findBuilderId(self.builder_for(package, arch))
        except Exception:
            return None, "", ""
        builds = yield self.master.data.get(("builders", builder_id, "builds"),
                                            filters=[resultspec.Filter("complete", "eq", [True])],
                                            order=["-buildid"], limit=50)
        for b in builds or []:
            if b["results"] not in OK:  # a data-API integer: Result members are equal to it
                continue
            raw = yield self.master.data.get(("builds", b["buildid"], "properties"))
            props = flatten(raw)
            made = [str(w).rsplit("/", 1)[-1] for w in props.get("wheels") or []]
            if props.get("final_version") == version and filename in made and props.get("uploaded"):
                url = f"{self.master.config.buildbotURL}#/builders/{builder_id}/builds/{b['number']}"
                worker = yield self.master.data.get(("workers", b["workerid"]))
                return props, url, (worker or {}).get("name", "")
        return None, "", ""

    @defer.inlineCallbacks
    def _records(self, index: Index) -> Generator[Any, Any, list[github_release.WheelRecord]]:
        records: list[github_release.WheelRecord] = []
        for pkg, (chosen, wheels, _) in index.items():
            for w in wheels:
                for arch in w.arches:
                    rec = github_release.WheelRecord(pkg, arch, w.filename, w.url, w.sha256, chosen)
                    props, url, worker = yield self._build_of(pkg, arch, chosen, w.filename)
                    if props:
                        row = row_from_properties(props, SUCCESS.label)
                        verify = (props.get("verify") or {}).get(w.filename, {})
                        smoke = (props.get("smoke") or {}).get(w.filename, {})
                        rec.isa, rec.verify = row["isa"], ("ok" if verify.get("ok") else row["verify"])
                        rec.smoke = smoke.get("status", row["smoke"])
                        rec.build_url = url
                        extra = (props.get("provenance") or {})  # per-wheel records, when the build makes them
                        rec.provenance = {
                            "upstream_tag": props.get("tag", ""), "upstream_commit": props.get("got_revision", ""),
                            "pinned_flags": props.get("pinned_flags", []), "verify": verify.get("summary", ""),
                            "smoke": smoke.get("status", ""), "smoke_reason": smoke.get("reason", ""),
                            "build": url, "worker": worker,
                            **(extra.get(w.filename, {}) if isinstance(extra, dict) else {}),
                        }
                    else:
                        rec.provenance = {"build": "not built by this master (found on the index)"}
                    records.append(rec)
        return records

    def _download(self, records: list[github_release.WheelRecord], dest: Path) -> list[Path]:
        """The wheels from the index (checked against its sha256), to attach; blocking."""
        paths, seen = [], set()
        for r in records:
            if r.filename not in seen:
                seen.add(r.filename)
                try:
                    paths.append(index.download(index.IndexFile(r.filename, r.url, r.sha256 or None),
                                                dest / r.filename))
                except Exception as exc:  # IndexUnusable, requests errors: one clear line
                    msg = f"cannot fetch {r.filename} from the index: {exc}"
                    raise github_release.GitHubReleaseError(msg) from None
        return paths

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        version, highest = wanted_version(self)
        log = yield self.addLog("github")
        foreign: list[Foreign] = []
        try:
            index = yield threads.deferToThread(self._index, version, highest, custody.blocking(self.master), foreign)
        except Exception as exc:
            self.descriptionDone = f"index not reachable: {exc}"[:200]
            yield log.addStderr(f"{type(exc).__name__}: {exc}\n")
            return FAILURE
        if foreign:
            yield log.addStderr("".join(f"not attached, not listed: FOREIGN {describe(f)}\n" for f in foreign))
        if not index:
            self.descriptionDone = f"nothing of {version} on the index: no GitHub release"
            if foreign:
                self.descriptionDone += f"; {len(foreign)} FOREIGN file(s) ignored"
                return WARNINGS
            yield log.addStdout(f"the index at {self.simple_url} has no wheel of {version}"
                                + (" or a .postN of it" if highest else "") + "\n")
            return SKIPPED
        records = yield self._records(index)
        versions = {pkg: chosen for pkg, (chosen, _, _) in index.items()}
        images = {pkg: self.images(pkg, v) for pkg, v in versions.items()} if self.images else None
        index_url = None if self.simple_url.rstrip("/") == PYPI_SIMPLE else self.simple_url
        notes = github_release.release_notes(
            str(self.getProperty("version")), versions, records, load(), self.torch_index_url, index_url, images,
            newest=all(newest for _, _, newest in index.values()), upstream_tag=str(self.getProperty("tag") or ""))
        yield self.addCompleteLog("release notes", notes.body)
        lines: list[str] = []
        tmp = Path(tempfile.mkdtemp(prefix="github-release-"))
        try:
            assets = (yield threads.deferToThread(self._download, records, tmp)) if self.attach_wheels else []
            result = yield threads.deferToThread(github_release.publish, self.api_url, str(self.token or ""),
                                                 self.repository, notes, assets, log=lines.append)
        except github_release.GitHubReleaseError as exc:
            yield log.addStdout("\n".join(lines) + "\n")
            yield log.addStderr(f"{exc}\n")
            self.descriptionDone = f"{notes.tag}: {exc}"[:200]
            return FAILURE
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        yield log.addStdout("\n".join(lines + [result.summary()]) + "\n")
        if result.url:
            yield self.addURL(f"GitHub release {notes.tag}", result.url)
        self.setProperty("github_release", {"tag": notes.tag, "url": result.url, "uploaded": result.uploaded,
                                            "present": result.present, "conflicts": result.conflicts}, self.name)
        self.descriptionDone = f"{notes.tag}: {result.summary()}"
        if foreign:
            self.descriptionDone += f"; {len(foreign)} FOREIGN file(s) not attached"
        self.descriptionDone = self.descriptionDone[:200]
        return WARNINGS if result.conflicts or foreign else SUCCESS


class QueueImages(Attached, buildstep.BuildStep):
    """Add one ``image`` step per package of the release (``variants`` restricts them).

    Each image step gets ``--custody-only`` and the release's wheels of this
    farm's custody ledger (``--custody FILE=SHA256``): a foreign file on the
    index is never used for an image.
    """

    name = "images_to_build"

    def __init__(self, packages_for: Callable[[str], list[str]], image_args: list[Any], simple_url: str,
                 lister: Callable[[str, str], list[index.IndexFile]] = index.list_index_files,
                 **kwargs: Any) -> None:
        self.packages_for = packages_for  # version -> packages built for it (variants.json)
        self.image_args = image_args  # common arguments of every image step
        self.simple_url, self.lister = simple_url, lister
        super().__init__(**kwargs)

    def _listed(self, packages: list[str], version: str) -> dict[str, list[index.IndexFile]]:
        """package -> its index files of ``version`` (or a .postN of it); blocking."""
        return {p: [f for f in self.lister(self.simple_url, p) if of_version(f.filename, version)] for p in packages}

    async def run(self) -> int:
        version, highest = wanted_version(self)
        chosen = self.getProperty("variants") or []
        packages = [p for p in self.packages_for(str(self.getProperty("version"))) if not chosen or p in chosen]
        if not packages:
            self.descriptionDone = f"no package is built for {version}"
            return SKIPPED
        try:
            listed = await threads.deferToThread(self._listed, packages, str(self.getProperty("version")))
        except Exception as exc:
            self.descriptionDone = f"index not reachable: {exc}"[:200]
            return FAILURE
        held = await custody.lookup(self.master, [f.filename for files in listed.values() for f in files])
        args = ["--version", version, *(["--highest-postfix"] if highest else []), *self.image_args]
        steps = []
        for p in packages:
            ours, _ = split(listed[p], held)
            trusted = [f"--custody={f.filename}={f.sha256}" for f in ours]
            steps.append(BuildImage(package=p, cli_args=[*args, "--custody-only", *trusted]))
        self.build.addStepsAfterCurrentStep(steps)
        self.descriptionDone = f"{len(packages)} image(s) of {version}" + (" (highest .postN)" if highest else "")
        return SUCCESS


class BuildImage(ToolchainStep):
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
            return WARNINGS
        refs = [p.ref for p in result.pushed]
        images = dict(self.getProperty("images") or {})
        images[self.package] = refs
        self.setProperty("images", images, "image")
        repos = len(refs) // max(len(result.tags), 1)
        self.descriptionDone = (f"{self.package} {result.version} ({', '.join(result.arches)}): pushed "
                                f"{', '.join(result.tags)} to {repos} repositories")[:200]
        return SUCCESS
