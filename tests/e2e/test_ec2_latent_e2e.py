"""An EC2 spot build host started on demand, against a local EC2 (moto's server): real master, worker, index.

The registry's only x86_64 worker is ``[worker.ec2]`` (spot, a bid ceiling,
the moto endpoint).  A forced release of one variant queues a build; the
master requests a spot instance with the entry's AMI, type and user-data;
the test plays the instance (a worker process with the name, master and
password from that user-data).  Mid-build EC2 takes the instance away
(terminated through moto, its worker killed): the build is retried on a new
instance, the wheel is uploaded once, the release finishes, and the instance
is terminated once the worker has been idle for its ``idle_timeout``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from buildbot.process.results import RETRY, SUCCESS, WARNINGS

from farm.names import builder_name
from farm.report import flatten
from sandbox import Sandbox
from tests.e2e.ec2 import CREDENTIALS, REGION, InstancePlayer, MotoServer
from tests.notify_servers import wait_for
from workers import registry
from workers.launch import Ec2Launch

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.12.0"
WORKER = "ec2-x86-1"
IDLE = 8  # seconds: the worker's idle_timeout
INSTANCE_TYPE = "m7i.large"
BID = 0.5


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[tuple[Sandbox, InstancePlayer, str]]:
    root = tmp_path_factory.mktemp("ec2")
    sb = Sandbox(root / "sb", tags=["v0.11.2", "v" + VERSION], web_port=0, worker_port=0, index_port=0,
                 poll_interval=1, quiet=True, worker_env=dict(CREDENTIALS))
    ami = moto.image("x86_64")
    ec2 = Ec2Launch(region=REGION, ami=ami, instance_type=INSTANCE_TYPE, keypair="vllm-cpu-test",
                    master=f"127.0.0.1:{sb.worker_port}", security_group="vllm-cpu-worker", spot=True,
                    max_spot_price=BID, endpoint_url=moto.url, idle_timeout=IDLE, start_timeout=180)
    arm = next(e for e in sb.entries if e.arch == "aarch64")
    sb.entries = [registry.WorkerEntry(WORKER, "x86_64", 1, "sandbox", "EC2 spot (moto)", launch=ec2), arm]
    player = InstancePlayer(moto.client(), root / "instances", sb.env)
    try:
        sb.start()
        player.start()
        yield sb, player, ami
    finally:
        player.stop()
        sb.stop()


def test_an_ami_of_another_arch_is_refused(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildbot.interfaces import LatentWorkerFailedToSubstantiate

    from master.latent import Ec2Worker

    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    arm = moto.image("arm64")
    w = Ec2Worker("amx-1", "pw", arch="x86_64", launch=Ec2Launch(
        region=REGION, ami=arm, instance_type="m7i.large", keypair="k", master="127.0.0.1:9989",
        security_group="sg", endpoint_url=moto.url))
    with pytest.raises(LatentWorkerFailedToSubstantiate, match=f"AMI {arm} is for arm64, worker amx-1 builds x86_64"):
        w.get_image()


def _step_running(sb: Sandbox, buildid: int) -> str | None:
    """The name of the build's compile step while it runs (the moment to take the host away)."""
    for s in sb.api(f"builds/{buildid}/steps"):
        if s["name"].startswith("build") and s["started_at"] and not s["complete"]:
            return str(s["name"])
    return None


def test_a_spot_release_survives_an_interruption_and_the_host_stops_when_idle(
        cloud: tuple[Sandbox, InstancePlayer, str], moto: MotoServer) -> None:
    sb, player, ami = cloud
    ec2 = moto.client()
    assert WORKER not in sb.connected_workers() and not player.played  # nothing runs before a build needs it
    bid = sb.builder_id(builder_name("vllm-cpu", "x86_64"))
    before = max([b["buildid"] for b in sb.release_builds()] or [0])
    assert sb.force(versions=VERSION, variants=["vllm-cpu"], arches=["x86_64"], reason="on demand").status_code == 200

    # Queued -> an instance -> its worker connected.
    br = wait_for(lambda: next(iter(sb.api(f"builders/{bid}/buildrequests")), None), 120, "the build request", 0.1)
    t_queued = time.monotonic()
    wait_for(lambda: WORKER in sb.connected_workers(), 180, f"{WORKER} connected", 0.1)
    first_wait = time.monotonic() - t_queued
    assert not player.errors, player.errors
    (first,) = player.played.values()

    # The instance EC2 was asked for: the entry's AMI, type, spot bid and user-data.
    (req,) = [q for q in ec2.describe_spot_instance_requests()["SpotInstanceRequests"]
              if q.get("InstanceId") == first.instance_id]
    assert float(req["SpotPrice"]) == BID
    assert (req["LaunchSpecification"]["ImageId"], req["LaunchSpecification"]["InstanceType"]) == (ami, INSTANCE_TYPE)
    inst = ec2.describe_instances(InstanceIds=[first.instance_id])["Reservations"][0]["Instances"][0]
    assert (inst["ImageId"], inst["InstanceType"], inst.get("InstanceLifecycle")) == (ami, INSTANCE_TYPE, "spot")
    password = (sb.secrets_dir / f"worker-{WORKER}").read_text()
    assert (first.worker, first.master, first.password) == (WORKER, f"127.0.0.1:{sb.worker_port}", password)
    assert (REPO / "workers" / "provision.sh").read_text().strip() in first.user_data
    assert f"WORKER_NAME={WORKER} MASTER=127.0.0.1:{sb.worker_port} CONNECT_TIMEOUT=180 sh /root/provision.sh" \
        in first.user_data

    # Mid-build, EC2 takes the instance away (a spot interruption).
    build = wait_for(lambda: next((b for b in sb.api(f"buildrequests/{br['buildrequestid']}/builds")
                                   if not b["complete"] and _step_running(sb, b["buildid"])), None),
                     300, "the variant build compiling", 0.2)
    player.interrupt(first.instance_id)
    t_gone = time.monotonic()
    wait_for(lambda: len(player.played) == 2, 180, "a second instance", 0.1)
    wait_for(lambda: WORKER in sb.connected_workers(), 180, f"{WORKER} connected again", 0.1)
    second_wait = time.monotonic() - t_gone
    second = next(p for p in player.played.values() if p.instance_id != first.instance_id)
    assert second.password == password

    done = sb.wait_release(VERSION, after=before, timeout=600)
    rel = done["release"]
    assert rel["results"] in (SUCCESS, WARNINGS), rel["state_string"]
    tries = sorted(sb.api(f"buildrequests/{br['buildrequestid']}/builds"), key=lambda b: b["buildid"])
    assert [t["buildid"] for t in tries][0] == build["buildid"]
    assert [t["results"] for t in tries[:-1]] == [RETRY] * (len(tries) - 1) and tries[-1]["results"] in (SUCCESS,
                                                                                                       WARNINGS)
    # Uploaded once: by the build that finished, never by the interrupted one; one file on the index.
    uploaded = [flatten(sb.api(f"builds/{t['buildid']}", property="uploaded")[0].get("properties")).get("uploaded")
                for t in tries]
    assert not any(uploaded[:-1]) and uploaded[-1], uploaded
    files = sorted(p.name for p in (sb.root / "index").iterdir() if p.name.startswith("vllm_cpu-" + VERSION))
    assert files == sorted(u.split("#")[0].rsplit("/", 1)[-1] for u in uploaded[-1]), files
    (row,) = done["rows"]
    assert row["uploaded"] == "yes" and row["arch"] == "x86_64"

    # Idle: the instance is terminated after idle_timeout, not before.
    finished = tries[-1]["complete_at"]
    wait_for(lambda: _state(ec2, second.instance_id) in ("shutting-down", "terminated"), IDLE + 120,
             "the idle instance terminated", 0.2)
    stopped_after = time.time() - finished
    wait_for(lambda: WORKER not in sb.connected_workers(), 60, f"{WORKER} gone", 0.2)
    assert stopped_after >= IDLE - 1, stopped_after
    assert {_state(ec2, p.instance_id) for p in player.played.values()} == {"terminated"}
    master_log = (sb.master_dir / "twistd.log").read_text(errors="replace")
    assert password not in master_log and password not in (sb.root / "master.log").read_text(errors="replace")
    starts = [float(s) for s in re.findall(rf"worker {WORKER} connected ([\d.]+)s after its start", master_log)]
    print(f"\nEC2 (moto) spot worker: queued -> connected {first_wait:.1f}s; after the interruption -> "
          f"connected again {second_wait:.1f}s; start_instance -> connected (master) "
          f"{', '.join(f'{s:.1f}s' for s in starts)}; terminated {stopped_after:.1f}s after its last build "
          f"(idle_timeout {IDLE}s)")
    assert len(starts) == 2


def _state(ec2, iid: str) -> str:
    return str(ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"])
