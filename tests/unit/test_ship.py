"""``ship_toolchain`` (``steps/ship.py``): under Buildbot's step harness, and its script on this host."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from buildbot.process import remotetransfer
from buildbot.process.results import FAILURE, SUCCESS
from buildbot.test.steps import ExpectDownloadFile, ExpectRemoteRef
from twisted.internet import defer
from twisted.trial import unittest

from steps import ship
from tests.unit.test_steps import PY, StepCase


def _tmp(case: unittest.TestCase) -> Path:
    d = Path(tempfile.mkdtemp(prefix="test-ship-"))
    case.addCleanup(shutil.rmtree, d, True)
    return d


class TestShipToolchain(StepCase):
    """One remote command when the worker has the tarball; else one transfer, then the same command."""

    tmp = _tmp

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.tarball = self.tmp() / "toolchain-abc.tar.gz"
        self.tarball.write_bytes(b"tarball bytes")
        self.cached = f"{ship.CACHE_DIR}/toolchain-abc.tar.gz"
        self.sha = hashlib.sha256(b"tarball bytes").hexdigest()

    def unpack(self, stdout: str, rc: int) -> None:
        self.shell(["sh", "-c", ship.ShipToolchain.SCRIPT, "python3", self.cached, self.sha], stdout, rc, env={})

    @defer.inlineCallbacks
    def test_cached_tarball_is_unpacked_without_a_transfer(self):
        self.setup(ship.ShipToolchain(self.tarball), worker_python="python3")
        self.unpack("creating venv\n" + PY + "\n", 0)
        self.expect_outcome(SUCCESS, f"toolchain-abc.tar.gz (cached) with {PY}")
        self.expect_property("toolchain_python", PY)
        yield self.run_step()

    @defer.inlineCallbacks
    def test_missing_tarball_is_sent_then_unpacked(self):
        got: list[bytes] = []
        self.setup(ship.ShipToolchain(self.tarball), worker_python="python3")
        self.unpack("", ship.NOT_CACHED)
        self.expect_commands(
            ExpectDownloadFile(workerdest=ship.SENT, workdir=".", blocksize=32 * 1024, maxsize=None, mode=0o600,
                               reader=ExpectRemoteRef(remotetransfer.StringFileReader))
            .download_string(got.append, size=10_000).exit(0))
        self.unpack(PY + "\n", 0)
        self.expect_outcome(SUCCESS, f"toolchain-abc.tar.gz (sent) with {PY}")
        yield self.run_step()
        assert got == [b"tarball bytes"]

    @defer.inlineCallbacks
    def test_bootstrap_failure_halts(self):
        self.setup(ship.ShipToolchain(self.tarball), worker_python="python3")
        self.unpack("", 1)
        self.expect_outcome(FAILURE, "toolchain unpack/bootstrap failed (exit 1) (failure)")
        yield self.run_step()


class TestShipScript(unittest.TestCase):
    """The step's shell script on this host: the cache, the sha256 check, a tampered or stale tarball."""

    tmp = _tmp

    def setUp(self):
        self.builder = self.tmp() / "builder"
        self.builder.mkdir(parents=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            data = b"import sys\nprint(sys.executable)\n"
            info = tarfile.TarInfo("vllm_cpu_build/bootstrap.py")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        self.data = buf.getvalue()
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.cached = self.builder / ship.CACHE_DIR / "toolchain-abc.tar.gz"

    def run_script(self, sha: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", ship.ShipToolchain.SCRIPT, sys.executable,
                               f"{ship.CACHE_DIR}/toolchain-abc.tar.gz", sha or self.sha],
                              cwd=self.builder, capture_output=True, text=True, check=False)

    def test_sent_once_then_cached_and_checked(self):
        assert self.run_script().returncode == ship.NOT_CACHED  # nothing cached, nothing sent
        (self.builder / ship.SENT).write_bytes(self.data)
        first = self.run_script()
        assert (first.returncode, first.stdout.strip()) == (0, sys.executable), first.stderr
        assert self.cached.read_bytes() == self.data and not (self.builder / ship.SENT).exists()
        assert (self.builder / "tc" / "vllm_cpu_build" / "bootstrap.py").is_file()
        again = self.run_script()  # a later build on this worker: no transfer
        assert again.returncode == 0 and "sent" not in again.stderr
        self.cached.write_bytes(self.data + b"tampered")
        assert self.run_script().returncode == ship.NOT_CACHED  # bytes that are not the master's: sent again
        (self.builder / ship.SENT).write_bytes(b"not it")
        assert self.run_script().returncode == ship.NOT_CACHED and not (self.builder / ship.SENT).exists()
