"""Load and validate ``variants.json``, the single source of truth.

Everything that needs to know which packages exist (builders, READMEs, the
detector, Docker tags, the ISA audit) reads them through this module, so a
mistake in the file is reported once, at load, with the offending key.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from vllm_cpu_build.enums import Arch
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.files import Format, read_document

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = REPO_ROOT / "variants.json"

ARCHES = tuple(Arch)
# Build switches, in the order each one implies the previous (amxbf16 needs
# avx512bf16 needs avx512vnni needs AVX-512 at all).
ISA_FLAGS = ("disable_avx512", "avx512vnni", "avx512bf16", "amxbf16")
# cpuinfo flag that each enabled switch must be backed by in cpu_flags.x86_64.
_FLAG_CPUINFO = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "amxbf16": "amx_bf16"}

_TOP_KEYS = {"schema", "project", "variants"}
_PROJECT_KEYS = {
    "homepage", "keywords", "manylinux_policy", "torch_index_url",
    "first_release", "unified_x86_release",
}
_VARIANT_KEYS = {
    "package", "short", "summary", "readme", "target_cpus", "keywords",
    "releases", "isa_flags", "arches",
}
_ARCH_KEYS = {"floor", "cpu_flags", "contract", "target_cpus"}  # target_cpus: optional
# ``floor`` value for a CPU QEMU user mode cannot emulate: the floor smoke needs such a host.
NATIVE_FLOOR = "native"
# QEMU's TCG (7.2) has no AVX-512 or AMX: a floor with these flags can only be native.
_NOT_EMULATED = ("avx512*", "amx_*")
_QEMU_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RULE_KEYS = {"releases", "modules", "require", "forbid", "optional"}


class VariantsError(UsageError, ValueError):
    """variants.json is malformed; the message names the key."""


class UnknownVariant(UsageError, KeyError):
    """A package name that variants.json does not list."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


@dataclass(frozen=True)
class ContractRule:
    """ISA rule for the ELF modules of a wheel matching ``modules``."""

    releases: SpecifierSet
    modules: str  # fnmatch pattern on the wheel member path
    require: tuple[str, ...]  # decoder feature names that must occur
    forbid: tuple[str, ...]  # fnmatch patterns of features that must not occur
    # Modules a build may lack (0.27+'s fs_io_C/spinloop are built for Python >= 3.11 only).
    optional: bool = False

    def applies_to(self, version: Version | str) -> bool:
        return self.releases.contains(Version(str(version)), prereleases=True)

    def matches_module(self, member: str) -> bool:
        return fnmatch.fnmatchcase(member, self.modules)

    def forbidden(self, features: set[str] | list[str]) -> list[str]:
        return sorted(f for f in features if any(fnmatch.fnmatchcase(f, p) for p in self.forbid))

    def missing(self, features: set[str] | list[str]) -> list[str]:
        return [f for f in self.require if f not in features]

    def describe(self) -> str:
        req = "/".join(self.require) or "nothing"
        forb = ", ".join(self.forbid) or "nothing"
        return f"{self.modules}{' (if built)' if self.optional else ''}: require {req}; forbid {forb}"


@dataclass(frozen=True)
class ArchSpec:
    arch: Arch
    cpu_flags: tuple[str, ...]
    contract: tuple[ContractRule, ...]
    # The oldest CPU the package promises: a QEMU ``-cpu`` model, or NATIVE_FLOOR.
    floor: str = NATIVE_FLOOR
    target_cpus: str = ""  # the CPUs of this arch the package runs on ("" = the variant's own text)

    @property
    def qemu_floor(self) -> str | None:
        """The QEMU CPU model the floor smoke emulates; None when only a native host can show it."""
        return None if self.floor == NATIVE_FLOOR else self.floor

    def rules_for(self, version: Version | str) -> list[ContractRule]:
        return [r for r in self.contract if r.applies_to(version)]


@dataclass(frozen=True)
class Variant:
    package: str
    short: str
    summary: str
    readme: Path
    target_cpus: str
    keywords: tuple[str, ...]
    releases: SpecifierSet
    isa_flags: dict[str, bool]
    arches: dict[Arch, ArchSpec] = field(default_factory=dict)

    @property
    def dist_name(self) -> str:
        """Distribution name as it appears in wheel filenames (PEP 427)."""
        return canonicalize_name(self.package).replace("-", "_")

    def applies_to(self, version: Version | str) -> bool:
        """Whether this package is built for upstream release ``version``."""
        v = Version(str(version))
        # Compare on the release part so 0.17.0rc1 and 0.16.0.post1 fall where
        # a maintainer expects them (the range talks about release lines).
        return self.releases.contains(Version(v.base_version), prereleases=True)

    def target_cpus_for(self, arch: str) -> str:
        """The CPUs of ``arch`` this package runs on: the arch's own ``target_cpus``, else the variant's."""
        spec = self.arches.get(Arch(arch)) if arch in ARCHES else None
        return (spec.target_cpus if spec is not None else "") or self.target_cpus

    def docker_tags(self, version: str) -> list[str]:
        return [f"{self.short}-{version}", f"{self.short}-latest"]


@dataclass(frozen=True)
class Catalog:
    path: Path
    project: dict[str, Any]
    variants: tuple[Variant, ...]

    def names(self) -> list[str]:
        return [v.package for v in self.variants]

    def get(self, package: str) -> Variant:
        want = canonicalize_name(package)
        for v in self.variants:
            if canonicalize_name(v.package) == want:
                return v
        raise UnknownVariant(f"unknown variant {package!r}; known: {', '.join(self.names())}")

    def builds(self) -> list[tuple[Variant, Arch]]:
        """Every (variant, arch) pair: one Buildbot builder each."""
        return [(v, a) for v in self.variants for a in v.arches]

    def for_release(self, version: str) -> list[Variant]:
        return [v for v in self.variants if v.applies_to(version)]

    def by_dist_name(self, dist: str) -> Variant | None:
        for v in self.variants:
            if v.dist_name == canonicalize_name(dist).replace("-", "_"):
                return v
        return None


def format_spec(spec: SpecifierSet) -> str:
    """``>=0.10.0, <0.17.0`` (lower bounds first), not packaging's sorted ``<0.17.0,>=0.10.0``."""
    return ", ".join(sorted((str(s) for s in spec), key=lambda s: (not s.startswith(">"), s)))


def _spec(where: str, value: object) -> SpecifierSet:
    if not isinstance(value, str):
        raise VariantsError(f"{where}: must be a version specifier string, got {value!r}")
    try:
        return SpecifierSet(value)
    except InvalidSpecifier as exc:
        raise VariantsError(f"{where}: invalid version specifier {value!r}: {exc}") from None


def _keys(where: str, obj: object, allowed: set[str], required: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise VariantsError(f"{where}: must be an object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise VariantsError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted((allowed if required is None else required) - set(obj))
    if missing:
        raise VariantsError(f"{where}: missing key(s) {', '.join(missing)}")
    return obj


def _str_list(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise VariantsError(f"{where}: must be a list of non-empty strings")
    return tuple(value)


def _rule(where: str, raw: object) -> ContractRule:
    raw = _keys(where, raw, _RULE_KEYS, _RULE_KEYS - {"optional"})
    if not isinstance(raw.get("optional", False), bool):
        raise VariantsError(f"{where}.optional: must be true or false")
    if not isinstance(raw["modules"], str) or not raw["modules"].startswith("vllm/"):
        raise VariantsError(f"{where}.modules: must be a pattern under vllm/ (vLLM's own modules only)")
    require = _str_list(f"{where}.require", raw["require"])
    forbid = _str_list(f"{where}.forbid", raw["forbid"]) if raw["forbid"] else ()
    clash = [r for r in require if any(fnmatch.fnmatchcase(r, p) for p in forbid)]
    if clash:
        raise VariantsError(f"{where}: {', '.join(clash)} both required and forbidden")
    return ContractRule(_spec(f"{where}.releases", raw["releases"]), raw["modules"], require, forbid,
                        raw.get("optional", False))


def _check_isa_flags(where: str, flags: object, arches: dict[Arch, ArchSpec]) -> dict[str, bool]:
    flags = _keys(where, flags, set(ISA_FLAGS))
    for k, val in flags.items():
        if not isinstance(val, bool):
            raise VariantsError(f"{where}.{k}: must be true or false")
    # Each switch needs the one before it: a BF16 build without VNNI or a
    # VNNI build with AVX-512 disabled is not a CPU that exists.
    chain = [not flags["disable_avx512"], flags["avx512vnni"], flags["avx512bf16"], flags["amxbf16"]]
    for i in range(1, len(chain)):
        if chain[i] and not chain[i - 1]:
            raise VariantsError(
                f"{where}: bad flag combination: {ISA_FLAGS[i]}=true needs "
                + ("disable_avx512=false" if i == 1 else f"{ISA_FLAGS[i - 1]}=true")
            )
    x86 = arches.get(Arch.X86_64)
    if x86 is not None:
        has = set(x86.cpu_flags)
        if flags["disable_avx512"] == ("avx512f" in has):
            raise VariantsError(
                f"{where}: disable_avx512={str(flags['disable_avx512']).lower()} contradicts "
                f"cpu_flags.x86_64 {'containing' if 'avx512f' in has else 'lacking'} avx512f"
            )
        for flag, cpuinfo in _FLAG_CPUINFO.items():
            if flags[flag] != (cpuinfo in has):
                raise VariantsError(
                    f"{where}: {flag}={str(flags[flag]).lower()} contradicts cpu_flags.x86_64 "
                    f"{'containing' if cpuinfo in has else 'lacking'} {cpuinfo}"
                )
    elif not flags["disable_avx512"] or any(flags[f] for f in _FLAG_CPUINFO):
        raise VariantsError(f"{where}: x86 ISA switches set on a variant without an x86_64 platform")
    return dict(flags)


def _arches(where: str, raw: object) -> dict[Arch, ArchSpec]:
    if not isinstance(raw, dict) or not raw:
        raise VariantsError(f"{where}: must name at least one architecture")
    arches: dict[Arch, ArchSpec] = {}
    for name, ra in raw.items():
        aw = f"{where}.{name}"
        if name not in ARCHES:
            raise VariantsError(f"{aw}: unknown architecture; known: {', '.join(ARCHES)}")
        spec = _keys(aw, ra, _ARCH_KEYS, _ARCH_KEYS - {"target_cpus"})
        rules = spec["contract"]
        target = spec.get("target_cpus", "")
        if not isinstance(target, str) or "\n" in target:
            raise VariantsError(f"{aw}.target_cpus: must be one line of text")
        if not isinstance(rules, list) or not rules:
            raise VariantsError(f"{aw}.contract: must be a non-empty list of rules")
        arch = Arch(name)
        flags = _str_list(f"{aw}.cpu_flags", spec["cpu_flags"])
        arches[arch] = ArchSpec(
            arch,
            flags,
            tuple(_rule(f"{aw}.contract[{j}]", r) for j, r in enumerate(rules)),
            _floor(f"{aw}.floor", spec["floor"], flags),
            target.strip(),
        )
    return arches


def _floor(where: str, value: object, cpu_flags: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not _QEMU_MODEL.match(value):
        raise VariantsError(f"{where}: must be a QEMU CPU model name or {NATIVE_FLOOR!r}, got {value!r}")
    beyond = [f for f in cpu_flags if any(fnmatch.fnmatchcase(f, p) for p in _NOT_EMULATED)]
    if value != NATIVE_FLOOR and beyond:
        raise VariantsError(f"{where}: QEMU cannot emulate {', '.join(beyond)}; the floor must be "
                            f"{NATIVE_FLOOR!r}")
    return value


def load(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate variants.json (``$VLLM_CPU_VARIANTS`` or the repo copy)."""
    p = Path(path or os.environ.get("VLLM_CPU_VARIANTS") or DEFAULT_PATH)
    return parse(read_document(p, Format.JSON, VariantsError), p)


def parse(raw: object, path: Path = DEFAULT_PATH) -> Catalog:
    raw = _keys(str(path.name), raw, _TOP_KEYS)
    if raw["schema"] != 1:
        raise VariantsError(f"schema: unsupported version {raw['schema']!r} (this code reads 1)")
    project = _keys("project", raw["project"], _PROJECT_KEYS)
    for key in ("first_release", "unified_x86_release"):
        try:
            Version(project[key])
        except (InvalidVersion, TypeError):
            raise VariantsError(f"project.{key}: not a version: {project[key]!r}") from None
    _str_list("project.keywords", project["keywords"])
    if not isinstance(raw["variants"], list) or not raw["variants"]:
        raise VariantsError("variants: must be a non-empty list")

    out: list[Variant] = []
    seen: dict[str, set[str]] = {"package": set(), "short": set()}
    for i, rv in enumerate(raw["variants"]):
        pkg = rv.get("package") if isinstance(rv, dict) else None
        where = f"variant {pkg}" if isinstance(pkg, str) else f"variants[{i}]"
        rv = _keys(where, rv, _VARIANT_KEYS)
        if not isinstance(pkg, str) or canonicalize_name(pkg) != pkg:
            raise VariantsError(f"{where}.package: {pkg!r} is not a normalized package name")
        for key, val in (("package", pkg), ("short", rv["short"])):
            if val in seen[key]:
                raise VariantsError(f"{where}: duplicate {key} {val!r}")
            seen[key].add(val)
        for key in ("short", "summary", "target_cpus"):
            if not isinstance(rv[key], str) or not rv[key].strip():
                raise VariantsError(f"{where}.{key}: must be a non-empty string")
        if "\n" in rv["summary"] or len(rv["summary"]) > 200:
            raise VariantsError(f"{where}.summary: must be one line of at most 200 characters")
        readme = (path.parent / rv["readme"]).resolve()
        if not readme.is_file():
            raise VariantsError(f"{where}.readme: {rv['readme']} does not exist")
        arches = _arches(f"{where}.arches", rv["arches"])
        variant = Variant(
            package=pkg,
            short=rv["short"],
            summary=rv["summary"],
            readme=readme,
            target_cpus=rv["target_cpus"],
            keywords=_str_list(f"{where}.keywords", rv["keywords"]),
            releases=_spec(f"{where}.releases", rv["releases"]),
            isa_flags=_check_isa_flags(f"{where}.isa_flags", rv["isa_flags"], arches),
            arches=arches,
        )
        out.append(variant)
    return Catalog(path, dict(project), tuple(out))
