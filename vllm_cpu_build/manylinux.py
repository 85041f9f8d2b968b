"""The ``manylinux`` check of ``verify``: every ELF's symbol versions against the policy and the tags.

The symbol versions (GLIBC, GLIBCXX, CXXABI, GCC ...) each ELF member needs
(``.gnu.version_r``, read with pyelftools) must be allowed by the policy of
variants.json (or ``--manylinux``) and by every manylinux tag the wheel
claims; the allowed versions come from auditwheel's own policy data, and
without it only glibc itself is judged.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import re
from functools import cache
from typing import Any

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection
from elftools.elf.sections import SymbolTableSection

from vllm_cpu_build.integrity import platform_arch
from vllm_cpu_build.wheelcheck import CheckFailed, Context

_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def policy_glibc(name: str) -> tuple[int, int]:
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)", name)
    if m:
        return int(m.group(1)), int(m.group(2))
    if name in _LEGACY_MANYLINUX:
        return _LEGACY_MANYLINUX[name]
    raise ValueError(f"not a manylinux policy name: {name!r} (expected manylinux_X_Y)")


@cache
def _auditwheel_policies() -> list[dict[str, Any]]:
    try:
        text = (importlib.resources.files("auditwheel.policy") / "manylinux-policy.json").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return []
    policies = json.loads(text)
    return [p for p in policies if isinstance(p, dict)] if isinstance(policies, list) else []


def _allowed_versions(glibc: tuple[int, int], arch: str) -> dict[str, set[str]] | None:
    """Symbol versions auditwheel's policy data allows, per prefix (GLIBC, GLIBCXX ...)."""
    name = f"manylinux_{glibc[0]}_{glibc[1]}"
    for pol in _auditwheel_policies():
        if pol.get("name") == name:
            per_arch = pol.get("symbol_versions", {}).get(arch)
            return {k: set(v) for k, v in per_arch.items()} if per_arch is not None else None
    return None


def _needed_versions(data: bytes) -> dict[str, list[str]]:
    """Version name -> undefined symbols that need it (from .gnu.version_r)."""
    elf = ELFFile(io.BytesIO(data))
    index_name: dict[int, str] = {}
    for sec in elf.iter_sections():
        if isinstance(sec, GNUVerNeedSection):
            for _verneed, auxes in sec.iter_versions():
                for aux in auxes:
                    index_name[aux["vna_other"]] = aux.name
    out: dict[str, list[str]] = {n: [] for n in index_name.values()}
    versym = elf.get_section_by_name(".gnu.version")
    dynsym = elf.get_section_by_name(".dynsym")
    if isinstance(versym, GNUVerSymSection) and isinstance(dynsym, SymbolTableSection):
        for i, sym in enumerate(dynsym.iter_symbols()):
            ndx = versym.get_symbol(i)["ndx"]
            if isinstance(ndx, int) and (ndx & 0x7FFF) in index_name:
                out[index_name[ndx & 0x7FFF]].append(sym.name)
    return out


def _version_key(v: str) -> tuple[int, ...] | None:
    return tuple(int(p) for p in v.split(".")) if re.fullmatch(r"\d+(\.\d+)*", v) else None


def _version_sort(name: str) -> tuple[str, tuple[int, ...], str]:
    prefix, _, ver = name.partition("_")
    return (prefix, _version_key(ver) or (1 << 30,), ver)


def _too_new(needed: str, glibc: tuple[int, int], allowed: dict[str, set[str]] | None) -> bool:
    prefix, _, ver = needed.partition("_")
    if allowed is not None:
        return prefix in allowed and ver not in allowed[prefix]
    if prefix != "GLIBC":  # without policy data only glibc itself is known
        return False
    key = _version_key(ver)
    return key is None or key > glibc  # GLIBC_PRIVATE is never allowed


def check_manylinux(ctx: Context) -> str:
    policy = policy_glibc(ctx.policy)
    limits = {ctx.policy: policy}
    problems: list[str] = []
    if ctx.filename is not None:
        for plat in sorted({t.platform for t in ctx.filename[3]}):
            arch = platform_arch(plat)  # whether it is --arch is the tags check's business
            claim = plat[: -len(arch) - 1] if arch != plat else plat
            try:
                tag_glibc = policy_glibc(claim)
            except ValueError:
                problems.append(f"platform tag {plat!r} is not a manylinux tag (PyPI rejects it)")
                continue
            if tag_glibc > policy:
                problems.append(f"platform tag {plat!r} claims a newer glibc than {ctx.policy}")
            limits[claim] = tag_glibc
    elves = ctx.wheel.elf_members
    for member in elves:
        machine = ctx.wheel.members[member].machine
        needed = _needed_versions(ctx.wheel.elf(member))
        for lim_name, glibc in sorted(limits.items(), key=lambda kv: kv[1]):
            allowed = _allowed_versions(glibc, machine)
            bad = sorted((v for v in needed if _too_new(v, glibc, allowed)), key=_version_sort)
            if bad:
                # One symbol per version is enough to find the culprit.
                named = [f"{v} ({min(needed[v])})" if needed[v] else v for v in bad]
                problems.append(f"{member} needs {', '.join(named)}: not allowed by {lim_name}")
                break  # the strictest failing limit says it all
    if problems:
        raise CheckFailed(problems)
    strict = min(limits.values())
    return f"{len(elves)} ELF member(s) need no symbol version newer than manylinux_{strict[0]}_{strict[1]}"
