"""After a release's uploads: the GitHub release.

``GitHubRelease`` (master side, in the ``release`` builder after ``fan_out``)
makes or updates the version's GitHub release from what the index holds of
this farm's output (``farm.custody``: a foreign file is never attached or
listed) and what this master's variant builds recorded.  With
``use_highest_postfix`` it uses the highest ``.postN`` the index has of the
version (``0.12.0`` -> ``0.12.0.post3``).  A variant build that uploads
after its release has finished (it waited for a worker of its arch) runs
the same steps itself (``uploaded_after_release``), so the release and the
images follow what was really published.
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
from farm.custody import Foreign, Ledger, describe
from farm.published import OnIndex, on_index
from farm.report import finished_release, flatten, floor_text, row_from_properties
from farm.states import FAILURE, OK, SKIPPED, SUCCESS, WARNINGS
from steps import custody
from steps.attached import Attached
from vllm_cpu_build import index
from vllm_cpu_build.specs import final_version
from vllm_cpu_build.variants import load

PYPI_SIMPLE = "https://pypi.org/simple"
Index = OnIndex


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
        return on_index(self.simple_url, self.packages_for(version), version, highest, ledger=ledger,
                        foreign=foreign)

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
                        rec.floor = floor_text(smoke)
                        rec.build_url = url
                        extra = (props.get("provenance") or {})  # per-wheel records, when the build makes them
                        mine = extra.get(w.filename, {}) if isinstance(extra, dict) else {}
                        mine = mine if isinstance(mine, dict) else {}
                        rec.source_date_epoch = str(mine.get("source_date_epoch", "-"))
                        rec.rebuild_sha256 = str(mine.get("rebuild_sha256") or "")
                        rec.provenance = {
                            "upstream_tag": props.get("tag", ""), "upstream_commit": props.get("got_revision", ""),
                            "pinned_flags": props.get("pinned_flags", []), "verify": verify.get("summary", ""),
                            "smoke": smoke.get("status", ""), "smoke_reason": smoke.get("reason", ""),
                            "floor": smoke.get("floor", ""), "floor_cpu": smoke.get("floor_cpu", ""),
                            "floor_reason": smoke.get("floor_reason", ""),
                            "build": url, "worker": worker,
                            **mine,
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


@defer.inlineCallbacks
def uploaded_after_release(step: Attached) -> Generator[Any, Any, bool]:
    """``doStepIf`` of a variant build's publish steps: it uploaded, and its release had already finished.

    While the release runs, its own publish steps (after ``fan_out``) see
    this build's wheels on the index; once it has finished, nothing else
    would: the late build updates the GitHub release and triggers its image.
    """
    if step.getProperty("dry_run") or step.getProperty("skip_upload") or not step.getProperty("uploaded"):
        return False
    build = yield step.master.data.get(("builds", step.build.buildid))
    release = yield finished_release(step.master, build) if build else None
    return release is not None
