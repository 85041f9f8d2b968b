"""A local EC2 for the on-demand worker tests: moto's server as a real process, and a player of its instances.

``MotoServer`` is ``python -m moto.server`` on a free 127.0.0.1 port; the
master's boto3 talks to it through the registry entry's ``endpoint_url``.
``InstancePlayer`` does what booting an instance would: for every instance
moto says is running it reads the instance's user-data (as cloud-init
would), takes the worker name, master and password the master put there
and starts a real ``buildbot-worker`` with them (``provision.sh`` itself is
what the EC2 user-data runs; here the worker process stands in for it).
An instance that moto says is shutting down or terminated loses its worker
process at once (SIGKILL: the host is gone).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.procs import free_port
from tests.e2e.services import stop_process, wait_http

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": REGION}


class MotoServer:
    """``moto_server`` on 127.0.0.1 (a free port), its log in ``log``."""

    def __init__(self, log: Path) -> None:
        self.port = free_port(0)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_http(self.url + "/moto-api/", timeout=60, proc=self.proc)

    def client(self) -> Any:
        import boto3

        return boto3.client("ec2", region_name=REGION, endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def image(self, arch: str) -> str:
        """An AMI moto offers for ``arch`` (x86_64 | arm64), a Linux one."""
        images = self.client().describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": [arch]}])
        linux = sorted(i["ImageId"] for i in images["Images"] if "windows" not in (i.get("Name") or "").lower()
                       and i.get("PlatformDetails", "Linux/UNIX").startswith("Linux"))
        assert linux, f"moto has no {arch} Linux image"
        return linux[0]

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Played:
    """One instance the player booted: its user-data and the worker process standing in for it."""

    instance_id: str
    user_data: str
    worker: str
    master: str
    password: str
    proc: subprocess.Popen[bytes]
    booted_at: float
    gone_at: float | None = None


@dataclass
class InstancePlayer:
    """Boots moto's running instances as worker processes under ``root``; ``env`` for those processes."""

    ec2: Any
    root: Path
    env: Callable[[], Mapping[str, str]]
    played: dict[str, Played] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> InstancePlayer:
        self._thread = threading.Thread(target=self._loop, name="instance-player", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.step()
            except BaseException as exc:  # the test asserts on these
                self.errors.append(exc)
                return

    def step(self) -> None:
        for r in self.ec2.describe_instances()["Reservations"]:
            for inst in r["Instances"]:
                iid, state = inst["InstanceId"], inst["State"]["Name"]
                if state == "running" and iid not in self.played:
                    self.played[iid] = self._boot(iid)
                elif state in ("shutting-down", "terminated") and iid in self.played:
                    p = self.played[iid]
                    if p.gone_at is None:
                        p.gone_at = time.monotonic()
                        _kill(p.proc)

    def _boot(self, iid: str) -> Played:
        raw = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
        text = base64.b64decode(raw).decode()
        name, master, password = parse_user_data(text)
        wdir = self.root / iid
        wdir.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        subprocess.run([str(bin_dir / "buildbot-worker"), "create-worker", "-q", "--umask=0o22", str(wdir), master,
                        name, password], check=True, env=dict(self.env()), capture_output=True)
        with (self.root / f"{iid}.log").open("ab") as out:
            proc = subprocess.Popen([str(bin_dir / "buildbot-worker"), "start", "--nodaemon", str(wdir)],
                                    stdout=out, stderr=subprocess.STDOUT, env=dict(self.env()),
                                    start_new_session=True)
        return Played(iid, text, name, master, password, proc, time.monotonic())

    def interrupt(self, iid: str) -> None:
        """A spot interruption: EC2 terminates the instance (its worker dies with it at the next look)."""
        self.ec2.terminate_instances(InstanceIds=[iid])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for p in self.played.values():
            _kill(p.proc)


def parse_user_data(text: str) -> tuple[str, str, str]:
    """(worker name, master host:port, password) from the user-data ``master/latent.py`` writes."""
    m = re.search(r"^WORKER_NAME=(\S+) MASTER=(\S+) ", text, re.M)
    pw = re.search(r"^cat > /root/\.vllm-cpu-worker-password <<'(\w+)'\n(.*?)\n\1$", text, re.M | re.S)
    assert m and pw, f"not the master's user-data:\n{text[:500]}"
    return m.group(1), m.group(2), pw.group(2)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
