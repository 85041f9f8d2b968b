"""Can this host run a variant's code?  (CPU flags, AMX permission.)

``smoke`` asks this before it executes anything from a wheel: running
AVX-512/BF16/AMX code on a CPU without it dies with SIGILL, which would be
reported as a broken wheel when it is only the wrong machine.

x86_64 reads the ``flags`` of /proc/cpuinfo.  aarch64 reads the ELF auxiliary
vector (``getauxval(AT_HWCAP)``/``AT_HWCAP2``): the kernel derives cpuinfo's
``Features`` line from the same bits, and under qemu-user (an emulated ARM
build host) /proc/cpuinfo is the x86 host's file while the auxiliary vector
is the emulated CPU's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from vllm_cpu_build.enums import Arch
from vllm_cpu_build.variants import Variant

CPUINFO = Path("/proc/cpuinfo")
# Tests point this at a fake cpuinfo; it can only take flags away (see check()).
CPUINFO_ENV = "VLLM_CPU_BUILD_CPUINFO"
_KEYS = {"x86_64": "flags", "aarch64": "Features"}
ARCH_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}

# Linux x86_64: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (Linux >= 5.16).
_SYS_ARCH_PRCTL = 158
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
AMX_FLAGS = frozenset({"amx_tile", "amx_bf16", "amx_int8"})

# <sys/auxv.h>: AT_HWCAP / AT_HWCAP2 entries of the auxiliary vector.
AT_HWCAP, AT_HWCAP2 = 16, 26
# Linux arch/arm64/include/uapi/asm/hwcap.h: bit -> the name /proc/cpuinfo prints
# for it (arch/arm64/kernel/cpuinfo.c), in bit order.
HWCAP_NAMES = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
    "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
    "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"
)
HWCAP2_NAMES = (
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
    "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte", "ecv",
    "afp", "rpres", "mte3", "sme", "smei16i64", "smef64f64", "smei8i32", "smef16f32", "smeb16f32",
    "smef32f32", "smefa64", "wfxt", "ebf16", "sveebf16"
)


def host_arch() -> str:
    m = platform.machine().lower()
    return ARCH_ALIASES.get(m, m)


def parse_flags(text: str, arch: str) -> set[str]:
    """CPU flags every processor in ``text`` (a /proc/cpuinfo) has.

    The intersection over processors: on hybrid CPUs the code may run on any
    core, so a flag counts only when all of them report it.
    """
    key = _KEYS[arch]
    sets = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            sets.append(set(value.split()))
    return set.intersection(*sets) if sets else set()


def read_flags(arch: str, cpuinfo: str | os.PathLike[str] | None = None) -> set[str]:
    return parse_flags(Path(cpuinfo or CPUINFO).read_text(errors="replace"), arch)


def hwcap_flags(hwcap: int, hwcap2: int = 0) -> set[str]:
    """aarch64 cpuinfo names of the bits set in AT_HWCAP / AT_HWCAP2 (unknown bits are left out)."""
    return ({n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1}
            | {n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1})


def auxv_hwcaps() -> tuple[int, int] | None:
    """(AT_HWCAP, AT_HWCAP2) of this process, None where libc has no getauxval."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return getauxval(AT_HWCAP), getauxval(AT_HWCAP2)


def host_flags(arch: str) -> set[str]:
    """CPU flags of this host, named as /proc/cpuinfo names them."""
    if arch == "aarch64" and platform.system() == "Linux":
        caps = auxv_hwcaps()
        if caps is not None and caps[0]:
            return hwcap_flags(*caps)
    return read_flags(arch)


def request_amx() -> str | None:
    """Ask the kernel for AMX tile data; None when granted, else why not."""
    if host_arch() != "x86_64" or platform.system() != "Linux":
        return "AMX needs Linux on x86_64"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    rc = libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                      ctypes.c_long(_XFEATURE_XTILEDATA))
    if rc == 0:
        return None
    err = ctypes.get_errno()
    return f"arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) refused: {errno.errorcode.get(err, err)} " \
           f"({os.strerror(err)}; AMX needs Linux >= 5.16 and a hypervisor that exposes it)"


@dataclass
class HostCheck:
    arch: str
    required: list[str]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def reason(self) -> str:
        if self.ok:
            return f"host CPU has {' '.join(self.required)}"
        return f"host CPU lacks {' '.join(self.missing)} (needed by the variant on {self.arch})" + (
            "; " + "; ".join(self.notes) if self.notes else "")


def check(variant: Variant, arch: str | None = None, cpuinfo: str | os.PathLike[str] | None = None) -> HostCheck:
    """Does this host have every ``cpu_flags`` of ``variant`` on ``arch``?

    ``cpuinfo`` (or ``$VLLM_CPU_BUILD_CPUINFO``) is checked *in addition to*
    the real /proc/cpuinfo: a fake file can make a check fail (to test the
    skip path) but never makes code run on a CPU that lacks the ISA.
    """
    arch = arch or host_arch()
    if arch not in variant.arches:
        raise ValueError(f"{variant.package} is not built for {arch}")
    required = list(variant.arches[Arch(arch)].cpu_flags)
    res = HostCheck(arch, required)
    if arch != host_arch():
        res.missing = required
        res.notes.append(f"this host is {host_arch()}, the wheel is for {arch}")
        return res
    have = host_flags(arch)
    override = cpuinfo or os.environ.get(CPUINFO_ENV)
    if override:
        have &= read_flags(arch, override)
        res.notes.append(f"cpuinfo narrowed by {override}")
    res.missing = [f for f in required if f not in have]
    if AMX_FLAGS & set(required) and not res.missing:
        why = request_amx()
        if why:
            res.missing = [f for f in required if f in AMX_FLAGS]
            res.notes.append(why)
    return res
