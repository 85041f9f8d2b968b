"""``vllm-cpu-build isa``: which instruction-set extensions an ELF really uses.

Counts instructions per CPU feature with real decoders, over every executable
section (never stopping at the first undecodable byte, never reading data
sections):

* x86/x86_64: iced-x86. Its per-instruction CPUID feature list is a function of
  the instruction's ``Code`` alone, so the hot loop only counts codes and the
  names are looked up once per distinct code. Feature names are iced's
  ``CpuidFeature`` names as-is (``AVX2``, ``AVX512F``, ``AVX512_VNNI``,
  ``AVX512_BF16``, ``AMX_TILE``, ``AMX_BF16``, ``AVX_VNNI`` ...).
* aarch64: capstone 6, which tags each instruction with the LLVM predicate that
  enables it (``HasBF16``, ``HasMatMulInt8``, ``HasSVEorSME`` ...). AArch64
  words are fixed-width and decode independently of their address' feature
  groups, so each distinct 32-bit word is decoded once and weighted by its
  count. Names follow the kernel's cpuinfo spelling, upper case: ``ASIMD``,
  ``FP16``, ``DOTPROD``, ``BF16``, ``I8MM``, ``SVE``, ``SVE2`` ...

capstone 5 and elfx86exts were measured to miss BF16/AMX and to stop early and
report "clean", which is why neither is used.
"""

from __future__ import annotations

import argparse
import array
import collections
import io
import os
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from elftools.elf.constants import P_FLAGS, SH_FLAGS
from elftools.elf.elffile import ELFFile

if TYPE_CHECKING:
    from iced_x86._iced_x86_py import Code as CodeType  # the stubs' enum; plain ints at run time

    from vllm_cpu_build.results import IsaResult

ELF_MAGIC = b"\x7fELF"
ZIP_MAGIC = b"PK\x03\x04"

# e_machine -> the arch spelling used in wheel platform tags.
MACHINE_ARCH = {"EM_X86_64": "x86_64", "EM_386": "i686", "EM_AARCH64": "aarch64"}


@dataclass
class IsaReport:
    """Instruction counts of one ELF, per CPU feature name."""

    arch: str
    features: dict[str, int] = field(default_factory=dict)
    instructions: int = 0  # decoded instructions
    invalid: int = 0  # bytes/words in executable sections that did not decode
    exec_bytes: int = 0  # size of the executable code scanned
    note: str = ""  # e.g. why nothing was decoded

    def has(self, feature: str) -> bool:
        return self.features.get(feature, 0) > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- ELF input


def _code_ranges(elf: ELFFile) -> list[tuple[int, bytes]]:
    """(address, bytes) of every executable section; segments if no sections."""
    out = [
        (s["sh_addr"], s.data())
        for s in elf.iter_sections()
        if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_type"] != "SHT_NOBITS" and s.data_size
    ]
    if out or elf.num_sections():
        return out
    # Section headers stripped: fall back to executable PT_LOAD segments.
    return [
        (seg["p_vaddr"], seg.data())
        for seg in elf.iter_segments()
        if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & P_FLAGS.PF_X
    ]


def elf_arch(elf: ELFFile) -> str:
    machine = elf["e_machine"]
    return MACHINE_ARCH.get(machine, str(machine))


def scan_elf(source: str | os.PathLike[str] | bytes) -> IsaReport:
    """Decode every executable section of an ELF (path or bytes)."""
    # ELFFile reads sections lazily from the stream, so it stays open until done.
    stream: BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        stream, label = io.BytesIO(bytes(source)), "data"
    else:
        stream, label = open(source, "rb"), str(source)  # noqa: SIM115
    try:
        if stream.read(4) != ELF_MAGIC:
            raise ValueError(f"{label}: not an ELF file")
        stream.seek(0)
        elf = ELFFile(stream)
        arch = elf_arch(elf)
        ranges = _code_ranges(elf)
        report = IsaReport(arch=arch, exec_bytes=sum(len(d) for _, d in ranges))
        if arch in ("x86_64", "i686"):
            _scan_x86(ranges, 64 if elf.elfclass == 64 else 32, report)
        elif arch == "aarch64":
            _scan_aarch64(ranges, elf.little_endian, report)
        else:
            report.note = f"no decoder for machine {arch}"
        return report
    finally:
        stream.close()


# ---------------------------------------------------------------- x86


@cache
def _cpuid_names() -> dict[int, str]:
    from iced_x86 import CpuidFeature

    return {v: k for k, v in vars(CpuidFeature).items() if k.isupper() and isinstance(v, int)}


@cache
def _code_features(code: int) -> tuple[str, ...]:
    from iced_x86 import Instruction

    names = _cpuid_names()
    return tuple(names.get(f, str(f)) for f in Instruction.create(cast("CodeType", code)).cpuid_features())


def _scan_x86(ranges: list[tuple[int, bytes]], bitness: int, report: IsaReport) -> None:
    from iced_x86 import Code, Decoder

    codes: collections.Counter[int] = collections.Counter()
    for addr, data in ranges:
        # Iterating the decoder and counting codes in C (Counter.update) runs
        # at ~25 MB/s; decode_out() with a Python loop is half as fast.
        codes.update(ins.code for ins in Decoder(bitness, data, ip=addr))
    feats: collections.Counter[str] = collections.Counter()
    for code, n in codes.items():
        if code == Code.INVALID:
            report.invalid += n
            continue
        report.instructions += n
        for name in _code_features(code):
            feats[name] += n
    report.features = dict(sorted(feats.items()))


# ---------------------------------------------------------------- aarch64

# capstone groups (LLVM predicates) -> cpuinfo-style names. Anything not listed
# falls back to the predicate without "Has", upper-cased.
_A64_NAMES = {
    "HasNEON": "ASIMD",
    "HasNEONorSME": "ASIMD",
    "HasFPARMv8": "FP",
    "HasFullFP16": "FP16",
    "HasFP16FML": "FHM",
    "HasDotProd": "DOTPROD",
    "HasBF16": "BF16",
    "HasMatMulInt8": "I8MM",
    "HasMatMulFP32": "F32MM",
    "HasMatMulFP64": "F64MM",
    "HasSVE": "SVE",
    "HasSVEorSME": "SVE",
    "HasLSE": "ATOMICS",
    "HasCRC": "CRC32",
    "HasRDM": "ASIMDRDM",
    "HasComplxNum": "FCMA",
    "HasJS": "JSCVT",
    "HasRCPC": "LRCPC",
}


def _a64_name(group: str) -> str:
    if group in _A64_NAMES:
        return _A64_NAMES[group]
    # HasSVE2orSME, HasSVE2p1_or_HasSME2, HasSVE2AES ...: all need SVE2.
    if group.startswith("HasSVE2"):
        return "SVE2"
    if group.startswith("HasSME"):
        return "SME"
    return group.removeprefix("Has").upper()


@cache
def _a64_disassembler() -> Any:  # capstone.Cs; capstone ships no type information
    import capstone  # type: ignore[import-untyped]

    if not hasattr(capstone, "CS_ARCH_AARCH64"):
        raise RuntimeError(f"capstone {capstone.__version__} lacks AArch64 feature groups; need capstone>=6")
    md = capstone.Cs(capstone.CS_ARCH_AARCH64, capstone.CS_MODE_ARM)
    md.detail = True
    return md


def _scan_aarch64(ranges: list[tuple[int, bytes]], little_endian: bool, report: IsaReport) -> None:
    words: collections.Counter[int] = collections.Counter()
    swap = little_endian != (sys.byteorder == "little")
    for _addr, data in ranges:
        usable = len(data) - len(data) % 4
        arr = array.array("I")
        arr.frombytes(data[:usable])
        if swap:
            arr.byteswap()
        words.update(arr)
        report.invalid += len(data) - usable  # a ragged tail cannot be an instruction
    md = _a64_disassembler()
    group_names: dict[int, str | None] = {}
    feats: collections.Counter[str] = collections.Counter()
    for word, n in words.items():
        ins = next(md.disasm(word.to_bytes(4, "little"), 0, 1), None)
        if ins is None:  # literal pools, padding, or an encoding capstone lacks
            report.invalid += n
            continue
        report.instructions += n
        names = set()
        for g in ins.groups:
            if g not in group_names:
                # < 128 are generic groups (jump, call, ret ...), not features.
                group_names[g] = _a64_name(ins.group_name(g)) if g >= 128 else None
            name = group_names[g]
            if name:
                names.add(name)
        for name in names:
            feats[name] += n
    report.features = dict(sorted(feats.items()))


# ---------------------------------------------------------------- one instruction


@dataclass(frozen=True)
class Decoded:
    """One instruction: its text and the CPU features it needs (the names the scan counts)."""

    text: str
    features: tuple[str, ...]
    length: int


def decode_one(arch: str, data: bytes, address: int = 0) -> Decoded | None:
    """The instruction at the start of ``data`` (e.g. the one a SIGILL stopped at); None if none decodes."""
    if arch in ("x86_64", "i686"):
        from iced_x86 import Code, Decoder, Formatter, FormatterSyntax

        ins = Decoder(64 if arch == "x86_64" else 32, data, ip=address).decode()
        if ins.code == Code.INVALID:
            return None
        return Decoded(Formatter(FormatterSyntax.INTEL).format(ins), _code_features(ins.code), ins.len)
    if arch == "aarch64":
        md = _a64_disassembler()
        a64 = next(md.disasm(data[:4], address, 1), None)
        if a64 is None:
            return None
        names = dict.fromkeys(_a64_name(a64.group_name(g)) for g in a64.groups if g >= 128)
        return Decoded(f"{a64.mnemonic} {a64.op_str}".strip(), tuple(names), 4)
    return None


# ---------------------------------------------------------------- wheels


def wheel_elf_members(zf: zipfile.ZipFile, prefix: str = "") -> list[str]:
    """Members that are ELF files, by magic (not by name)."""
    out = []
    for info in zf.infolist():
        if info.is_dir() or not info.filename.startswith(prefix) or info.file_size < 4:
            continue
        with zf.open(info) as f:
            if f.read(4) == ELF_MAGIC:
                out.append(info.filename)
    return out


def scan_wheel(path: str | os.PathLike[str], prefix: str = "") -> dict[str, IsaReport]:
    """IsaReport for every ELF member of a wheel (optionally under ``prefix``)."""
    with zipfile.ZipFile(path) as zf:
        return {m: scan_elf(zf.read(m)) for m in wheel_elf_members(zf, prefix)}


# ---------------------------------------------------------------- CLI


def _targets(paths: list[str]) -> list[tuple[str, str | None, IsaReport]]:
    from vllm_cpu_build.errors import UsageError

    out: list[tuple[str, str | None, IsaReport]] = []
    for p in paths:
        if not Path(p).is_file():
            raise UsageError(f"{p}: no such file")
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == ZIP_MAGIC:
            try:
                reports = scan_wheel(p)
            except zipfile.BadZipFile as exc:
                raise UsageError(f"{p}: not a readable wheel: {exc}") from None
            if not reports:
                print(f"{p}: no ELF members", file=sys.stderr)
            out.extend((p, m, r) for m, r in reports.items())
        elif magic == ELF_MAGIC:
            out.append((p, None, scan_elf(p)))
        else:
            raise UsageError(f"{p}: neither an ELF file nor a wheel")
    return out


def format_table(file: str, member: str | None, r: IsaReport) -> str:
    title = f"{file}" + (f" :: {member}" if member else "")
    lines = [
        f"{title}",
        f"  arch {r.arch}, {r.instructions:,} instructions in {r.exec_bytes:,} bytes of code"
        + (f", {r.invalid:,} undecodable" if r.invalid else "")
        + (f" ({r.note})" if r.note else ""),
    ]
    width = max((len(k) for k in r.features), default=7)
    for name, n in sorted(r.features.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name:<{width}}  {n:>12,}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> IsaResult:
    from vllm_cpu_build.results import IsaFile, IsaResult

    results = _targets(args.files)
    print("\n\n".join(format_table(f, m, r) for f, m, r in results), file=sys.stderr if args.json else sys.stdout)
    return IsaResult([IsaFile(file=f, member=m, **r.to_json()) for f, m, r in results])


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "isa",
        help="count instruction-set extensions used by ELF files or the ELF members of wheels",
        description=__doc__,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="ELF file or wheel")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)
