"""Buildbot workers from ``workers/registry.toml``; passwords are secrets.

An entry with a launch table is a latent worker (``master/latent.py``): started when a build needs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from buildbot.plugins import util, worker
from twisted.internet import defer
from twisted.python import log

from farm.settings import Settings
from master.reproduce import max_builds
from workers import hostinfo, launch, registry


class DescribedLocalWorker(worker.LocalWorker):
    """An in-process worker whose description (``info/host``) says what it is and what it runs on."""

    ROLE = "in-process worker of the master for the release and re-check builders"

    @defer.inlineCallbacks
    def reconfigService(self, name: str, workdir: str | None = None, **kwargs: Any):
        # Before the in-process bot starts: it sends info/ once, when it attaches.
        path = Path(os.path.abspath(os.path.join(self.master.basedir, "workers", workdir or name)))
        try:
            hostinfo.write_info(path, "", self.ROLE)
        except OSError as exc:  # a description is not worth a failed start
            log.msg(f"vllm-cpu: cannot write {path}/info/host: {exc}")
        yield super().reconfigService(name, workdir=workdir, **kwargs)


# In-process workers for the orchestration builders (release, recheck): they
# mostly wait for other builds, so they must not hold a real worker's slot.
# A worker runs one build of a builder at a time, so several of them let
# releases overlap (a release never waits for an arch without a worker, see
# steps/fan_out.py); how many is the setting master.local_workers.
# Their names carry the master's name: in a multi-master cluster each master
# has its own, and a worker name is connected to one master at a time.
def local_worker_names(count: int, master_name: str = "master") -> list[str]:
    return [f"{master_name}-local-{i}" for i in range(1, count + 1)]


def load_entries(settings: Settings) -> list[registry.WorkerEntry]:
    return registry.load(settings.master.workers_registry)


def make_workers(entries: list[registry.WorkerEntry], local_workers: int, master_name: str = "master",
                 reproduce: bool = False) -> list:
    """``reproduce``: each registry worker gets a slot more for rebuilds (``master/reproduce.py``)."""

    out: list = [DescribedLocalWorker(name, max_builds=2) for name in local_worker_names(local_workers, master_name)]
    for e in entries:
        common: dict[str, Any] = {
            "max_builds": max_builds(e, reproduce), "notify_on_missing": [],
            "properties": {"worker_arch": e.arch, "worker_python": e.python, "worker_admin": e.admin,
                           "worker_build_root": e.build_root}}
        if isinstance(e.launch, launch.Ec2Launch):
            from master.latent import Ec2Worker  # boto3 only where an EC2 worker is configured

            out.append(Ec2Worker(e.name, util.Secret(e.secret_name), arch=e.arch, launch=e.launch, **common))
        elif isinstance(e.launch, launch.LocalLaunch):
            from master.latent import LocalProcessWorker

            out.append(LocalProcessWorker(e.name, util.Secret(e.secret_name), command=e.launch.command,
                                          build_wait_timeout=e.launch.idle_timeout,
                                          missing_timeout=e.launch.start_timeout, **common))
        else:
            out.append(worker.Worker(e.name, util.Secret(e.secret_name), **common))
    return out


def names_by_arch(entries: list[registry.WorkerEntry]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for e in entries:
        by.setdefault(e.arch, []).append(e.name)
    return by
