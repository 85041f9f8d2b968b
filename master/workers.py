"""Buildbot workers from ``workers/registry.toml``; passwords are secrets."""

from __future__ import annotations

from buildbot.plugins import util, worker

from master.settings import Settings
from workers import registry

# In-process worker for the orchestration builders (release, recheck): they
# mostly wait for other builds, so they must not hold a real worker's slot.
LOCAL_WORKER = "master-local"


def load_entries(settings: Settings) -> list[registry.WorkerEntry]:
    return registry.load(settings.workers_registry)


def make_workers(entries: list[registry.WorkerEntry]) -> list:
    out: list = [worker.LocalWorker(LOCAL_WORKER, max_builds=8)]
    for e in entries:
        out.append(worker.Worker(
            e.name, util.Secret(e.secret_name), max_builds=e.max_builds,
            properties={"worker_arch": e.arch, "worker_python": e.python, "worker_admin": e.admin},
            notify_on_missing=[],
        ))
    return out


def names_by_arch(entries: list[registry.WorkerEntry]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for e in entries:
        by.setdefault(e.arch, []).append(e.name)
    return by
