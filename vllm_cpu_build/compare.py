"""``vllm-cpu-build compare A.whl B.whl``: are two wheels the same bytes, and if not, where do they differ?

A rebuild of a tag must give the wheel that was published.  This compares
the two files' sha256; when they differ it names every archive member that
differs: only in one wheel, other bytes (for an ELF member, which sections:
``.rodata`` for a ``__DATE__``, ``.note.gnu.build-id`` follows any code
change), or the same bytes with other zip metadata (mode, date_time ...).
Same members with the same metadata in another order is an archive-wide
difference (member ``""``).

Exit codes: 0 the wheels are identical, 1 they differ (the output lists
how), 2 bad input (a file missing or not a zip archive).
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from vllm_cpu_build.enums import DiffKind
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.helptext import describe
from vllm_cpu_build.provenance import sha256
from vllm_cpu_build.results import CompareResult, MemberDifference

ELF_MAGIC = b"\x7fELF"
# The ZipInfo fields a wheel's bytes depend on, besides the member's content.
ZIP_FIELDS = ("date_time", "external_attr", "compress_type", "create_system", "create_version",
              "extract_version", "flag_bits", "extra", "comment", "compress_size")
# Section header fields that say what a section is; sh_offset left out: one grown section moves all later ones.
_SECTION_KEYS = ("sh_type", "sh_flags", "sh_addr", "sh_size", "sh_addralign", "sh_entsize", "sh_link", "sh_info")


def compare(a: Path | str, b: Path | str) -> CompareResult:
    """``a`` against ``b``; raises UsageError when either is missing or not a zip archive."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.is_file():
            raise UsageError(f"{p}: no such file")
        if not zipfile.is_zipfile(p):
            raise UsageError(f"{p}: not a wheel (zip archive)")
    sums = {"a": sha256(a), "b": sha256(b)}
    if sums["a"] == sums["b"]:
        return CompareResult(str(a), str(b), True, sums)
    try:
        with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
            diffs = _members(za, zb)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"not a readable wheel: {exc}") from None
    return CompareResult(str(a), str(b), False, sums, diffs)


def _members(za: zipfile.ZipFile, zb: zipfile.ZipFile) -> list[MemberDifference]:
    ia = {i.filename: i for i in za.infolist()}
    ib = {i.filename: i for i in zb.infolist()}
    out: list[MemberDifference] = []
    for name in sorted(ia.keys() | ib.keys()):
        if name not in ib:
            out.append(MemberDifference(name, DiffKind.ONLY_IN_A, detail=f"{ia[name].file_size:,} bytes"))
        elif name not in ia:
            out.append(MemberDifference(name, DiffKind.ONLY_IN_B, detail=f"{ib[name].file_size:,} bytes"))
        else:
            diff = _member(za, zb, ia[name], ib[name])
            if diff is not None:
                out.append(diff)
    common = [n for n in ia if n in ib]
    order_b = [n for n in ib if n in ia]
    if common != order_b:
        first = next(i for i, (x, y) in enumerate(zip(common, order_b, strict=True)) if x != y)
        out.append(MemberDifference("", DiffKind.ARCHIVE, fields=["order"],
                                    detail=f"entry {first}: {common[first]} in a, {order_b[first]} in b"))
    if za.comment != zb.comment:
        out.append(MemberDifference("", DiffKind.ARCHIVE, fields=["comment"]))
    if not out:  # the bytes differ, but no member or entry does: local headers, padding, data descriptors
        out.append(MemberDifference("", DiffKind.ARCHIVE, fields=["layout"],
                                    detail="same members and metadata; the zip layout differs"))
    return out


def _member(za: zipfile.ZipFile, zb: zipfile.ZipFile, xa: zipfile.ZipInfo,
            xb: zipfile.ZipInfo) -> MemberDifference | None:
    fields = [f for f in ZIP_FIELDS if getattr(xa, f) != getattr(xb, f)]
    if "external_attr" in fields:  # say "mode" when that is what differs
        fields[fields.index("external_attr")] = "mode" if (xa.external_attr >> 16) != (xb.external_attr >> 16) \
            else "external_attr"
    if xa.CRC == xb.CRC and xa.file_size == xb.file_size:
        data_a = data_b = b""  # not read: the same CRC and size (a collision would still show in sha256 above)
    else:
        data_a, data_b = za.read(xa), zb.read(xb)
    if data_a == data_b:
        if not fields:
            return None
        return MemberDifference(xa.filename, DiffKind.ZIPINFO, fields=fields,
                                detail="; ".join(_field_detail(f, xa, xb) for f in fields))
    if data_a[:4] == ELF_MAGIC and data_b[:4] == ELF_MAGIC:
        sections = elf_sections(data_a, data_b)
        return MemberDifference(xa.filename, DiffKind.CONTENT, sections=sections, fields=fields,
                                detail=f"ELF sections differ: {', '.join(sections)}")
    return MemberDifference(xa.filename, DiffKind.CONTENT, fields=fields, detail=_text_detail(data_a, data_b))


def _field_detail(name: str, xa: zipfile.ZipInfo, xb: zipfile.ZipInfo) -> str:
    if name == "mode":
        return f"mode {xa.external_attr >> 16:o} vs {xb.external_attr >> 16:o}"
    if name == "date_time":
        return f"date_time {xa.date_time} vs {xb.date_time}"
    return name


def _text_detail(a: bytes, b: bytes) -> str:
    """The first differing line of a text member; sizes for binary ones."""
    try:
        la, lb = a.decode().splitlines(), b.decode().splitlines()
    except UnicodeDecodeError:
        return f"{len(a):,} vs {len(b):,} bytes"
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"line {i + 1}: {_clip(x)!r} vs {_clip(y)!r}"
    return f"{len(la)} vs {len(lb)} lines"


def _clip(line: str, width: int = 100) -> str:
    return line if len(line) <= width else line[:width] + "..."


def elf_sections(a: bytes, b: bytes) -> list[str]:
    """The sections of two ELF images that differ (header fields or bytes), in ``a``'s order.

    A section only one image has is named too.  When no section differs the
    headers do: ``<ELF header>``, ``<program headers>``, or ``<layout>``
    (padding between sections).
    """
    try:
        ea, eb = ELFFile(io.BytesIO(a)), ELFFile(io.BytesIO(b))
        sa, sb = _sections(ea), _sections(eb)
        out = [k for k in sa if k not in sb or sa[k] != sb[k]] + [k for k in sb if k not in sa]
        if out:
            return out
        if _header(ea) != _header(eb):
            return ["<ELF header>"]
        if [dict(s.header) for s in ea.iter_segments()] != [dict(s.header) for s in eb.iter_segments()]:
            return ["<program headers>"]
    except ELFError as exc:
        return [f"<unreadable ELF: {exc}>"]
    return ["<layout>"]


def _sections(elf: ELFFile) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for s in elf.iter_sections():
        name = s.name or "<unnamed>"
        key, n = name, 1
        while key in out:  # the same name twice (rare): the second is "name#2"
            n += 1
            key = f"{name}#{n}"
        data = b"" if s["sh_type"] == "SHT_NOBITS" else s.data()
        out[key] = (*(s[f] for f in _SECTION_KEYS), data)
    return out


def _header(elf: ELFFile) -> dict[str, object]:
    # e_shoff moves with any section's size; the sections already said whether that changed.
    return {k: v for k, v in dict(elf.header).items() if k != "e_shoff"}


def format_text(res: CompareResult) -> str:
    if res.identical:
        return f"identical: {res.a} and {res.b} (sha256 {res.sha256['a']})"
    lines = [f"DIFFER: {res.a} (sha256 {res.sha256['a']})", f"    vs {res.b} (sha256 {res.sha256['b']})"]
    for d in res.differences:
        lines.append(f"  {d.kind}: {d.member or '(archive)'}" + (f": {d.detail}" if d.detail else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> CompareResult:
    res = compare(args.a, args.b)
    print(format_text(res), file=sys.stderr if args.json else sys.stdout)
    return res


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compare", help="compare two wheels byte for byte; name the members and ELF sections "
                                       "that differ",
                       description=describe(__doc__) + "\n\n" + describe(__doc__, paragraph=1) + "\n\n"
                       + (__doc__ or "").split("\n\n")[2])
    p.add_argument("a", metavar="A.whl")
    p.add_argument("b", metavar="B.whl")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)
