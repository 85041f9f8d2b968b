"""Builders: one per variant × arch from variants.json, plus release and recheck."""

from __future__ import annotations

from pathlib import Path

from buildbot import config
from buildbot.plugins import util

from farm.names import IMAGES, RECHECK, RELEASE, builder_name, trigger_name
from farm.settings import Settings
from master import factories, reproduce
from master.tags import UpstreamTags
from master.workers import local_worker_names
from vllm_cpu_build.variants import Catalog


def make_builders(settings: Settings, catalog: Catalog, workers_by_arch: dict[str, list[str]],
                  tarball: Path, tags: UpstreamTags, locks: list | None = None) -> list[util.BuilderConfig]:
    """``locks``: what every builder on registry workers holds (``master/reproduce.py``)."""
    schedulers_for = {(v.package, a): trigger_name(v.package, a) for v, a in catalog.builds()}
    local_workers = local_worker_names(settings.master.local_workers, settings.master.name)
    out = [
        util.BuilderConfig(
            name=RELEASE, workernames=local_workers, collapseRequests=False, tags=["release"],
            factory=factories.release_factory(settings, tarball, schedulers_for, tags),
            description="plan one vLLM version, skip what is published, build every variant × arch",
        ),
        util.BuilderConfig(
            name=RECHECK, workernames=local_workers, collapseRequests=False, tags=["release"],
            factory=factories.recheck_factory(settings, "release-trigger", tags),
            description="list upstream release tags and start releases nothing was published for",
        ),
    ]
    for variant, arch in catalog.builds():
        workers = workers_by_arch.get(arch, [])
        if not workers:
            config.error(f"no worker of arch {arch} in {settings.master.workers_registry}: "
                         f"builder {builder_name(variant.package, arch)} could never run")
        out.append(util.BuilderConfig(
            name=builder_name(variant.package, arch),
            # Only workers of this arch: a request waits until one connects.
            workernames=workers,
            collapseRequests=False, tags=[variant.short, arch], locks=list(locks or []),
            factory=factories.variant_factory(settings, tarball, variant, arch),
            description=f"{variant.package} for {arch}: {variant.target_cpus_for(arch)}"[:200],
        ))
    if settings.images.enabled:
        out.append(images_builder(settings, workers_by_arch, tarball, locks))
    arches = sorted({a for _, a in catalog.builds()})
    return out + reproduce.make_builders(settings, arches, workers_by_arch, tarball)


def images_builder(settings: Settings, workers_by_arch: dict[str, list[str]], tarball: Path,
                   locks: list | None = None) -> util.BuilderConfig:
    """Runtime images on workers with buildah: ``[images] workers``, or every x86_64 worker."""
    known = {w for ws in workers_by_arch.values() for w in ws}
    names = list(settings.images.workers) or workers_by_arch.get("x86_64", [])
    unknown = sorted(set(names) - known)
    if unknown:
        config.error(f"images.workers: not in {settings.master.workers_registry}: {', '.join(unknown)}")
    if not names:
        config.error("images: no worker to build images on (no x86_64 worker and no images.workers)")
    return util.BuilderConfig(
        name=IMAGES, workernames=names, collapseRequests=False, tags=["release", "images"], locks=list(locks or []),
        factory=factories.images_factory(settings, tarball),
        description="runtime images of a release's packages (buildah), pushed to the configured registries",
    )
