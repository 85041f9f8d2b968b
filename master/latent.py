"""Build hosts the master starts when a build needs one and stops when idle (Buildbot latent workers).

``Ec2Worker`` is Buildbot's own ``EC2LatentWorker`` with three additions:
the user-data, which runs ``workers/provision.sh`` with the worker's
password, is rendered when the instance starts (the password is a secret,
known only then); an AMI of another architecture than the worker's is
refused before anything is paid for; and the EC2 API endpoint may be another
than AWS's (the tests' local EC2).  ``LocalProcessWorker`` runs a worker
process on the master's host instead: the sandbox's stand-in for a cloud
host (and its emulated arm64 worker).  Both log how long a start took until
the worker connected.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from buildbot import config
from buildbot.interfaces import LatentWorkerFailedToSubstantiate
from buildbot.worker.ec2 import EC2LatentWorker
from buildbot.worker.latent import AbstractLatentWorker
from twisted.internet import defer, threads
from twisted.python import log

from farm.settings import REPO_ROOT
from workers.launch import Ec2Launch

PROVISION = REPO_ROOT / "workers" / "provision.sh"
USER_DATA_LIMIT = 16384  # bytes EC2 accepts before base64
EC2_ARCH = {"arm64": "aarch64", "x86_64": "x86_64"}  # EC2's image architecture -> ours
_HEREDOC = "VLLM_CPU_WORKER_EOF"


class Timed:
    """Logs how long a start took until the worker connected (``start_seconds``: the last one)."""

    _start_at: float | None = None
    start_seconds: float | None = None
    name: str

    def _started(self) -> None:
        self._start_at = time.monotonic()

    @defer.inlineCallbacks
    def attached(self, conn: Any) -> Any:
        result = yield super().attached(conn)  # type: ignore[misc]
        if self._start_at is not None:
            self.start_seconds = time.monotonic() - self._start_at
            self._start_at = None
            log.msg(f"vllm-cpu: worker {self.name} connected {self.start_seconds:.1f}s after its start")
        return result


def user_data(name: str, master: str, password: str, start_timeout: int, provision: str | None = None) -> str:
    """The instance's first-boot script: the password to a 0600 file, then ``provision.sh``, as root."""
    script = PROVISION.read_text() if provision is None else provision
    if any(line == _HEREDOC for line in (script + "\n" + password).splitlines()):
        raise ValueError(f"the user-data text holds the line {_HEREDOC}")
    return (f"#!/bin/sh\n# vllm-cpu worker {name}: written by the master (master/latent.py) for this instance\n"
            f"set -eu\nexport HOME=/root\numask 077\n"
            f"cat > /root/.vllm-cpu-worker-password <<'{_HEREDOC}'\n{password}\n{_HEREDOC}\n"
            f"cat > /root/provision.sh <<'{_HEREDOC}'\n{script.rstrip()}\n{_HEREDOC}\n"
            f"umask 022\nWORKER_NAME={name} MASTER={master} CONNECT_TIMEOUT={start_timeout} sh /root/provision.sh\n")


def _session(launch: Ec2Launch) -> Any:
    """A boto3 session for the region; with ``endpoint_url``, every client and resource talks to it."""
    import boto3

    class EndpointSession(boto3.session.Session):  # type: ignore[misc]
        def client(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("endpoint_url", launch.endpoint_url or None)
            return super().client(*args, **kwargs)

        def resource(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("endpoint_url", launch.endpoint_url or None)
            return super().resource(*args, **kwargs)

    return EndpointSession(region_name=launch.region)


class Ec2Worker(Timed, EC2LatentWorker):
    """An EC2 instance of registry entry ``[worker.ec2]`` per substantiation (spot or on demand)."""

    _poll_resolution = 2  # seconds between looks at a starting or stopping instance

    def __init__(self, name: str, password: Any, *, arch: str, launch: Ec2Launch, **kwargs: Any) -> None:
        self.arch = arch
        self.launch = launch
        if len(user_data(name, launch.master, "x" * 64, launch.start_timeout).encode()) > USER_DATA_LIMIT:
            config.error(f"worker {name}: its user-data (provision.sh) exceeds EC2's {USER_DATA_LIMIT} bytes")
        super().__init__(
            name, password, instance_type=launch.instance_type, ami=launch.ami, region=launch.region,
            keypair_name=launch.keypair, security_name=launch.security_group or None,
            subnet_id=launch.subnet or None, security_group_ids=list(launch.security_group_ids) or None,
            spot_instance=launch.spot, max_spot_price=launch.max_spot_price or None,
            price_multiplier=launch.price_multiplier or None,
            instance_profile_name=launch.instance_profile or None,
            tags={"Name": f"vllm-cpu-worker {name}", "vllm-cpu-worker": name},
            session=_session(launch), build_wait_timeout=launch.idle_timeout,
            missing_timeout=launch.start_timeout, **kwargs)

    def start_instance(self, build: Any) -> Any:
        self._started()
        # self.password is the secret, rendered by reconfigService; it goes only into the request.
        text = user_data(self.name, self.launch.master, self.password, self.launch.start_timeout)
        # RunInstances (boto3 encodes it) takes the text; RequestSpotInstances wants it in base64
        # already, which EC2LatentWorker does not do (EC2 answers InvalidUserData.Malformed).
        self.user_data = base64.b64encode(text.encode()).decode() if self.spot_instance else text
        d = super().start_instance(build)

        def forget(result: Any) -> Any:
            self.user_data = None
            return result

        return d.addBoth(forget)

    def get_image(self) -> Any:
        """The AMI, refused when it is not of the worker's arch (an arm64 image on an x86 worker, ...)."""
        image = super().get_image()
        found = EC2_ARCH.get(image.architecture, image.architecture)
        if found != self.arch:
            msg = f"AMI {image.id} is for {image.architecture}, worker {self.name} builds {self.arch}"
            log.msg(f"vllm-cpu: {msg}")
            raise LatentWorkerFailedToSubstantiate(self.name, msg)
        return image


class LocalProcessWorker(Timed, AbstractLatentWorker):
    """A worker process on the master's host, started by ``command`` when a build needs it.

    Its worker directory, with the password, exists beforehand; its output
    goes to ``<basedir>/workers/<name>.log``.  Stopping it is SIGTERM to its
    process group (it was started in a session of its own), SIGKILL after
    ``stop_grace`` seconds.
    """

    stop_grace = 30.0

    def checkConfig(self, name: str, password: Any, command: tuple[str, ...] = (), **kwargs: Any) -> None:
        if not command:
            config.error(f"worker {name}: [worker.local] command is empty")
        super().checkConfig(name, password, **kwargs)

    def reconfigService(self, name: str, password: Any, command: tuple[str, ...] = (), **kwargs: Any) -> Any:
        self.command = list(command)
        return super().reconfigService(name, password, **kwargs)

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def logfile(self) -> Path:
        return Path(self.master.basedir) / "workers" / f"{self.name}.log"

    def start_instance(self, build: Any) -> Any:
        self._started()
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as out:
            self._proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        log.msg(f"vllm-cpu: started worker {self.name} (pid {self._proc.pid}) for a queued build")
        return defer.succeed(True)

    def check_instance(self) -> tuple[bool, str]:
        p = self._proc
        if p is None or p.poll() is None:
            return True, ""
        return False, f"its process exited with {p.returncode} before it connected; see {self.logfile}"

    def stop_instance(self, fast: bool = False) -> Any:
        p, self._proc = self._proc, None
        if p is None:
            return defer.succeed(None)
        log.msg(f"vllm-cpu: stopping worker {self.name} (pid {p.pid})")
        return threads.deferToThread(_end, p, 5.0 if fast else self.stop_grace)


def _end(p: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group of ``p``, SIGKILL after ``grace`` seconds; reap it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        if p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
