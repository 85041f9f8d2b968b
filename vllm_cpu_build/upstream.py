"""What each upstream vLLM release line offers to a CPU build: the one table.

Everything else (``patch``, ``build``, ``plan``) asks this module instead of
comparing version numbers itself.  Each row was read from the real sdists on
the package index (setup.py, pyproject.toml, cmake/cpu_extension.cmake,
vllm/platforms/__init__.py, vllm/envs.py); ``patch`` re-checks the switches a
row claims against the tree it patches, so a wrong row fails loudly instead of
building a wrong wheel.

Boundaries (measured on 0.10.0 … 0.33.0; 0.15.x has no sdist on the index, so
it rides with 0.16 and is guarded only by those checks):

* 0.10.0–0.11.0: ISA switches ``VLLM_CPU_DISABLE_AVX512`` (literal ``true``),
  ``VLLM_CPU_AVX512VNNI``, ``VLLM_CPU_AVX512BF16``; **no AMX at all** in cmake;
  no ``VLLM_VERSION_OVERRIDE`` → the ``+cpu`` line must be neutralised.
* 0.11.1: + ``VLLM_CPU_AMXBF16`` (``-mamx-bf16 -mamx-tile``) and
  ``VLLM_VERSION_OVERRIDE``.
* 0.16.0: + ``VLLM_CPU_AVX2`` / ``VLLM_CPU_AVX512`` (force detection on).
* 0.17.0: x86 kernels unified, chosen at run time: ``_C`` (AVX512+VNNI+BF16+AMX)
  and ``_C_AVX2``; only ``VLLM_CPU_X86`` / ``VLLM_CPU_ARM_BF16`` remain.
* 0.18.0: + ``_C_AVX512`` (plain AVX-512F/BW/VL/DQ).
* 0.27.0: + ``VLLM_CPU_ARM_I8MM``.
* 0.28.0: ``cpu_platform_plugin()`` also accepts ``VLLM_TARGET_DEVICE=cpu`` at run time.
* 0.31.0: + ``VLLM_SKIP_VERSION_SUFFIX``; the ``+cpu`` line moved one level deeper.
* every line: the CPU extension is built with ``py_limited_api``/``USE_SABI 3``
  (``_C.abi3.so``); the wheel tag is the build command's choice (upstream: cp38-abi3).
  0.27+ adds ``fs_io_C``/``spinloop`` (``USE_SABI 3.11``, only with Python >= 3.11):
  not a row here, ``abi3.stable_abi`` reads every module's ``USE_SABI`` from the tree.

Host leaks in cmake/cpu_extension.cmake (all lines): ``cat /proc/cpuinfo`` drives
AVX-512/VNNI/BF16/AMX (x86, before 0.17) and ``+bf16``/``i8mm`` (aarch64) →
``patch`` pins it.  ``-march=native`` appears only in the s390x branch and
``file(READ /proc/cpuinfo)`` (0.33) only in the riscv64 branch; neither is
reachable for x86_64/aarch64.  0.33's ``-mamx-fp8``/``-mavx10.2`` are probed
from the *compiler*, not the host, and only go into the AMX ``_C`` module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from vllm_cpu_build.enums import Arch
from vllm_cpu_build.specs import SpecError, final_version
from vllm_cpu_build.variants import Variant, load

# cmake switches that concern architectures we never build (riscv64); a tree
# may read them without the table knowing more.
FOREIGN_SWITCHES = frozenset({"VLLM_CPU_RVV_BF16"})


@dataclass(frozen=True)
class ReleaseLine:
    name: str
    versions: SpecifierSet
    # x86, before unification: env var names, None where the release lacks it
    disable_avx512: str | None = None  # only the literal "true" disables
    avx512vnni: str | None = None
    avx512bf16: str | None = None
    amxbf16: str | None = None
    force_avx2: str | None = None  # VLLM_CPU_AVX2: force detection on
    force_avx512: str | None = None
    # unified releases
    x86: str | None = None  # VLLM_CPU_X86: build the x86 kernels (cross builds)
    arm_bf16: str | None = None
    arm_i8mm: str | None = None
    # version handling in setup.py
    version_override: bool = False  # VLLM_VERSION_OVERRIDE
    skip_version_suffix: bool = False  # VLLM_SKIP_VERSION_SUFFIX
    # x86 extension modules the wheel carries (vllm/<name>.abi3.so)
    x86_modules: tuple[str, ...] = ("_C",)
    # vllm/platforms: cpu_platform_plugin() honours VLLM_TARGET_DEVICE=cpu at run time
    runtime_target_device: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def unified_x86(self) -> bool:
        """One x86 wheel carries every ISA level and picks one at run time."""
        return self.x86 is not None

    @property
    def has_amx(self) -> bool:
        return self.amxbf16 is not None or self.unified_x86

    @property
    def span(self) -> str:
        """The releases this recipe covers, as a person reads them: ``0.11.1 - 0.14.x``, ``0.31.0 and newer``.

        A recipe is named after the release that defined it, not the first it
        covers ("0.16" covers 0.15 too): say the range wherever a version is
        shown with its recipe, never "release line <name>" alone.
        """
        lower = next((Version(s.version) for s in self.versions if s.operator == ">="), None)
        upper = next((Version(s.version) for s in self.versions if s.operator == "<"), None)
        first = ".".join(map(str, (lower.release + (0, 0))[:3])) if lower else "any"
        if upper is None:
            return f"{first} and newer"
        major, minor, micro = (upper.release + (0, 0))[:3]
        if micro:
            last = f"{major}.{minor}.{micro - 1}"
        elif minor:
            last = f"{major}.{minor - 1}.x"
        else:
            return f"{first} to before {upper}"
        return f"{first} - {last}"

    def switches(self) -> tuple[str, ...]:
        """Every VLLM_CPU_* variable this line's cmake reads (for our arches)."""
        names = (self.disable_avx512, self.avx512vnni, self.avx512bf16, self.amxbf16,
                 self.force_avx2, self.force_avx512, self.x86, self.arm_bf16, self.arm_i8mm)
        return tuple(n for n in names if n)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "versions": str(self.versions),
            "switches": list(self.switches()),
            "version_override": self.version_override,
            "skip_version_suffix": self.skip_version_suffix,
            "unified_x86": self.unified_x86,
            "x86_modules": list(self.x86_modules),
            "runtime_target_device": self.runtime_target_device,
        }


_PRE17: dict[str, Any] = dict(disable_avx512="VLLM_CPU_DISABLE_AVX512", avx512vnni="VLLM_CPU_AVX512VNNI",
              avx512bf16="VLLM_CPU_AVX512BF16")
_POST17: dict[str, Any] = dict(x86="VLLM_CPU_X86", arm_bf16="VLLM_CPU_ARM_BF16", version_override=True)

_SABI311 = "fs_io_C/spinloop: USE_SABI 3.11, built for Python >= 3.11 only: cp311-abi3 + one wheel per older Python"

RELEASE_LINES: tuple[ReleaseLine, ...] = (
    ReleaseLine("0.10", SpecifierSet(">=0.10.0,<0.11.1"), **_PRE17,
                notes=("no AMX support in cmake", "no VLLM_VERSION_OVERRIDE: +cpu line neutralised")),
    ReleaseLine("0.11", SpecifierSet(">=0.11.1,<0.15"), **_PRE17, amxbf16="VLLM_CPU_AMXBF16",
                version_override=True),
    ReleaseLine("0.16", SpecifierSet(">=0.15,<0.17"), **_PRE17, amxbf16="VLLM_CPU_AMXBF16",
                force_avx2="VLLM_CPU_AVX2", force_avx512="VLLM_CPU_AVX512", version_override=True,
                notes=("0.15.x has no sdist; assumed like 0.16 (patch checks the switches)",)),
    ReleaseLine("0.17", SpecifierSet(">=0.17,<0.18"), **_POST17, x86_modules=("_C", "_C_AVX2")),
    ReleaseLine("0.18", SpecifierSet(">=0.18,<0.27"), **_POST17, x86_modules=("_C", "_C_AVX512", "_C_AVX2")),
    # 0.27+: the helper modules fs_io_C and spinloop use USE_SABI 3.11 and exist only when built
    # with Python >= 3.11 (abi3.stable_abi finds them in the tree; plan splits the wheels there).
    ReleaseLine("0.27", SpecifierSet(">=0.27,<0.28"), **_POST17, arm_i8mm="VLLM_CPU_ARM_I8MM",
                x86_modules=("_C", "_C_AVX512", "_C_AVX2"), notes=(_SABI311,)),
    ReleaseLine("0.28", SpecifierSet(">=0.28,<0.31"), **_POST17, arm_i8mm="VLLM_CPU_ARM_I8MM",
                x86_modules=("_C", "_C_AVX512", "_C_AVX2"), runtime_target_device=True,
                notes=(_SABI311,)),
    ReleaseLine("0.31", SpecifierSet(">=0.31"), **_POST17, arm_i8mm="VLLM_CPU_ARM_I8MM",
                x86_modules=("_C", "_C_AVX512", "_C_AVX2"), runtime_target_device=True,
                skip_version_suffix=True, notes=(_SABI311,)),
)


# The newest upstream sdist the table above was checked against.  A newer
# release still builds (patch re-checks every anchor), but tools that answer
# without a tree (vllm-cpu-detect) call anything past this line "unknown".
NEWEST_CHECKED_RELEASE = "0.33.0"


class UnsupportedRelease(ValueError):
    """The version is older than the project builds or not a version at all."""


def _version(version: str | Version) -> Version:
    try:
        return Version(str(version))
    except InvalidVersion:
        raise UnsupportedRelease(f"{version!r} is not a valid PEP 440 version") from None


def release_line(version: str | Version) -> ReleaseLine:
    """The release line of upstream ``version`` (rc/dev/post fall in their line)."""
    v = _version(version)
    first = Version(load().project["first_release"])
    base = Version(v.base_version)
    if base < first:
        raise UnsupportedRelease(
            f"vLLM {v} is older than the first release this project builds ({first}, "
            "variants.json project.first_release)"
        )
    for line in RELEASE_LINES:
        if line.versions.contains(base, prereleases=True):
            return line
    raise UnsupportedRelease(f"vLLM {v}: no release line in vllm_cpu_build/upstream.py covers it")  # pragma: no cover


def _on(flag: bool) -> str:
    return "1" if flag else "0"


def isa_env(variant: Variant, arch: Arch, line: ReleaseLine) -> dict[str, str]:
    """The ISA switches exactly as ``line`` reads them, each set explicitly.

    Switches the variant does not want are set to a false value rather than
    left out, so a stray value in the worker's environment cannot turn them on.
    """
    if arch not in variant.arches:
        raise ValueError(f"{variant.package} is not built for {arch}; it has {', '.join(variant.arches)}")
    if arch == Arch.X86_64:
        return _x86_env(variant, line)
    # aarch64: upstream switches only ever turn features on.
    flags = set(variant.arches[Arch(arch)].cpu_flags)
    env: dict[str, str] = {}
    if line.x86:
        env[line.x86] = "0"
    if line.arm_bf16:
        env[line.arm_bf16] = _on("bf16" in flags)
    if line.arm_i8mm:
        env[line.arm_i8mm] = _on("i8mm" in flags)
    return env


def _x86_env(variant: Variant, line: ReleaseLine) -> dict[str, str]:
    if line.x86 is not None:
        # One wheel holds every level; the switches of old lines are gone.
        return {line.x86: "1"}
    f = variant.isa_flags
    if f["amxbf16"] and not line.amxbf16:
        raise UnsupportedRelease(
            f"{variant.package}: vLLM release line {line.name} has no AMX support "
            f"(cmake knows no AMX flags); the variant cannot be built for it"
        )
    if line.disable_avx512 is None or line.avx512vnni is None or line.avx512bf16 is None:
        # A table row error, not an input error: every line before unification has these three.
        raise UnsupportedRelease(f"vLLM release line {line.name}: the table names no x86 ISA switches")
    # Upstream disables AVX-512 only for the literal string "true".
    env = {line.disable_avx512: "true" if f["disable_avx512"] else "false",
           line.avx512vnni: _on(f["avx512vnni"]), line.avx512bf16: _on(f["avx512bf16"])}
    if line.amxbf16:
        env[line.amxbf16] = _on(f["amxbf16"])
    if line.force_avx2:
        env[line.force_avx2] = _on("avx2" in variant.arches[Arch.X86_64].cpu_flags)
    if line.force_avx512:
        env[line.force_avx512] = _on(not f["disable_avx512"])
    return env


def build_env(variant: Variant, arch: Arch, version: str, postfix: str = "",
              max_jobs: int | None = None) -> dict[str, str]:
    """Complete environment for building ``variant`` for ``arch`` from upstream ``version``."""
    line = release_line(version)
    if not variant.applies_to(version):
        raise UnsupportedRelease(
            f"{variant.package} is not built for vLLM {version} (variants.json releases {variant.releases})"
        )
    try:
        full_v = final_version(version, postfix)
    except SpecError as exc:
        raise UnsupportedRelease(str(exc)) from None
    env = {"VLLM_TARGET_DEVICE": "cpu"}
    env.update(isa_env(variant, arch, line))
    # A checkout derives its version from git, an sdist from PKG-INFO; pin both ways.
    env["SETUPTOOLS_SCM_PRETEND_VERSION"] = str(full_v)
    if line.version_override:
        env["VLLM_VERSION_OVERRIDE"] = str(full_v)
    if line.skip_version_suffix:
        env["VLLM_SKIP_VERSION_SUFFIX"] = "1"
    if max_jobs is not None:
        env["MAX_JOBS"] = str(max_jobs)
    return env


# --- cpuinfo pinning --------------------------------------------------------

CPUINFO_KEY = {"x86_64": "flags", "aarch64": "Features"}
# What upstream's find_isa() must see to pick the arch's branch at all.
ARCH_BASE_FLAGS = {"x86_64": ("avx2",), "aarch64": ("asimd",)}


def pinned_flags(variant: Variant, arch: Arch) -> list[str]:
    """cpuinfo flags the build pretends to have: the variant's own plus the arch base."""
    flags = list(variant.arches[arch].cpu_flags)
    for base in ARCH_BASE_FLAGS[arch]:
        if base not in flags:
            flags.insert(0, base)
    return flags


def pinned_cpuinfo(variant: Variant, arch: Arch) -> str:
    return f"{CPUINFO_KEY[arch]}\t\t: {' '.join(pinned_flags(variant, arch))}\n"

