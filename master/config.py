"""``build_config(settings)``: the whole BuildmasterConfig from small parts."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

from buildbot.plugins import secrets, util
from twisted.python import log

from farm import packing
from farm.settings import Master, Settings
from master import builders, notify, readiness, reproduce, schedulers, singleton, toolchain, workers, www
from master.tags import UpstreamTags
from vllm_cpu_build import variants


def db_config(m: Master) -> dict:
    """``c["db"]``: the URL, and the password as a secret handed to the driver (never part of the URL or logs)."""
    db: dict = {"db_url": m.db_url}
    if m.db_password_secret:
        db["engine_kwargs"] = {"connect_args": {"password": util.Secret(m.db_password_secret)}}
    return db


def build_config(settings: Settings, basedir: str | Path) -> dict:
    singleton.claim(basedir, settings.master)  # first: a second master stops before anything else
    catalog = variants.load()
    entries = workers.load_entries(settings)
    # A real master keeps the tarball in its basedir; `checkconfig` of the
    # source file must not write into the repository.
    base = Path(basedir)
    out_dir = base / "toolchain"
    if not (base / "buildbot.tac").exists():
        out_dir = Path(tempfile.gettempdir()) / "vllm-cpu-toolchain"
    tarball = toolchain.build_tarball(out_dir)
    tags = UpstreamTags(settings.upstream)
    m = settings.master
    by_arch = workers.names_by_arch(entries)
    arches = sorted({a for _, a in catalog.builds()})
    slots = reproduce.slot_locks(settings, entries)  # [] unless [build] reproduce
    c: dict = {
        "title": settings.master.title,
        "titleURL": settings.master.web_url_slash,
        "buildbotURL": settings.master.web_url_slash,
        "db": db_config(settings.master),
        "protocols": {"pb": {"port": f"tcp:{m.worker_port}:interface={m.worker_interface}"}},
        "workers": workers.make_workers(entries, m.local_workers, m.name, settings.build.reproduce),
        "change_source": schedulers.make_change_sources(settings),
        "schedulers": schedulers.make_schedulers(settings, catalog, tags) + readiness.make_schedulers(settings)
        + reproduce.make_schedulers(settings, arches),
        "builders": builders.make_builders(settings, catalog, by_arch, tarball, tags, slots)
        + readiness.make_builders(settings, by_arch, tarball, tags, slots),
        # Never merge queued requests: each carries its own version/parameters.
        "collapseRequests": False,
        # A free worker takes the queued build expected to run longest (farm/packing.py).
        "prioritizeBuilders": packing.prioritize_builders,
        "www": www.make_www(settings, tags, catalog),
        "buildbotNetUsageData": None,
        "secretsProviders": [],
        "services": notify.make_reporters(settings, catalog),
    }
    if m.mq_router_url:
        # Multi-master: masters share the database and exchange messages through a WAMP router (crossbar).
        c["multiMaster"] = True
        c["mq"] = {"type": "wamp", "router_url": m.mq_router_url, "realm": m.mq_realm, "wamp_debug_level": "error"}
    if settings.master.log_horizon_days:
        # Compile logs are MBs per build; the build records (results, properties,
        # what the re-check counts) stay, only old log text goes.
        c["configurators"] = [util.JanitorConfigurator(logHorizon=timedelta(days=settings.master.log_horizon_days),
                                                       hour=3)]
    if settings.master.secrets_dir.is_dir():
        c["secretsProviders"].append(secrets.SecretInAFile(dirname=str(settings.master.secrets_dir)))
    else:
        log.msg(f"vllm-cpu: secrets directory {settings.master.secrets_dir} missing; workers cannot log in")
    cache_secret = settings.cache.password_secret
    if cache_secret and not (settings.master.secrets_dir / cache_secret).is_file():
        # Not an error: builds go on without the shared compile cache and say so (steps/compile_cache.py).
        log.msg(f"vllm-cpu: WARNING: [cache] password_secret {cache_secret!r} is not in "
                f"{settings.master.secrets_dir}; builds run without the shared compile cache")
    return c
