"""``build_config(settings)``: the whole BuildmasterConfig from small parts."""

from __future__ import annotations

import functools
import tempfile
from datetime import timedelta
from pathlib import Path

from buildbot.plugins import secrets, util
from twisted.python import log

from master import builders, notify, schedulers, toolchain, workers, www
from master.settings import Settings
from vllm_cpu_build import variants


def build_config(settings: Settings, basedir: str | Path) -> dict:
    catalog = variants.load()
    entries = workers.load_entries(settings)
    # A real master keeps the tarball in its basedir; `checkconfig` of the
    # source file must not write into the repository.
    base = Path(basedir)
    out_dir = base / "toolchain"
    if not (base / "buildbot.tac").exists():
        out_dir = Path(tempfile.gettempdir()) / "vllm-cpu-toolchain"
    tarball = toolchain.build_tarball(out_dir)
    list_versions = functools.partial(schedulers.list_upstream_versions, settings)
    # A maintainer may force a pre-release by naming it (ranges include one only
    # as an end point); tags and the re-check follow build_prereleases.
    list_forceable = functools.partial(schedulers.list_upstream_versions, settings, prereleases=True)
    c: dict = {
        "title": settings.title,
        "titleURL": settings.web_url_slash,
        "buildbotURL": settings.web_url_slash,
        "db": {"db_url": settings.db_url},
        "protocols": {"pb": {"port": f"tcp:{settings.worker_port}:interface={settings.worker_interface}"}},
        "workers": workers.make_workers(entries),
        "change_source": schedulers.make_change_sources(settings),
        "schedulers": schedulers.make_schedulers(settings, catalog, list_forceable),
        "builders": builders.make_builders(settings, catalog, workers.names_by_arch(entries), tarball,
                                           list_versions),
        # Never merge queued requests: each carries its own version/parameters.
        "collapseRequests": False,
        "www": www.make_www(settings),
        "buildbotNetUsageData": None,
        "secretsProviders": [],
        "services": notify.make_reporters(settings, catalog),
    }
    if settings.log_horizon_days:
        # Compile logs are MBs per build; the build records (results, properties,
        # what the re-check counts) stay, only old log text goes.
        c["configurators"] = [util.JanitorConfigurator(logHorizon=timedelta(days=settings.log_horizon_days),
                                                       hour=3)]
    if settings.secrets_dir.is_dir():
        c["secretsProviders"].append(secrets.SecretInAFile(dirname=str(settings.secrets_dir)))
    else:
        log.msg(f"vllm-cpu: secrets directory {settings.secrets_dir} missing; workers cannot log in")
    return c
