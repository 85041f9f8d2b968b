"""What every ``verify`` check reads: the wheel (one streaming pass), the shared context, the verdict type.

``WheelReader`` reads every member of the zip once, to the end, so the
zipfile module checks each CRC-32; it keeps sizes, sha256 and the first
bytes (ELF magic and header) of each, and reads a member again only when
a check needs its content.  A check is a function of a ``Context`` that
returns its detail line or raises ``CheckFailed`` with the reasons.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.tags import Tag
from packaging.utils import NormalizedName
from packaging.version import Version

from vllm_cpu_build import isa as isa_mod
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.variants import Variant

# e_machine numbers -> platform-tag arch (read from the ELF header directly so
# every member can be classified without parsing it fully).
_EM = {62: "x86_64", 183: "aarch64", 3: "i686", 40: "armv7l", 21: "ppc64le", 22: "s390x", 243: "riscv64"}
_MAX_LISTED = 8  # problems listed per check before "... and N more"


class CheckFailed(Exception):
    """A check's verdict: failed, with these reasons."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("; ".join(self.problems))


def listing(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; ... and {more} more" if more else "")


def b64(digest: bytes) -> str:
    """A digest as RECORD writes it: urlsafe base64 without padding."""
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Member:
    name: str
    size: int = 0
    sha256: str = ""  # urlsafe b64, no padding
    head: bytes = b""  # first 64 bytes: ELF magic and header
    error: str = ""  # CRC or decompression error

    @property
    def is_elf(self) -> bool:
        return self.head[:4] == isa_mod.ELF_MAGIC

    @property
    def machine(self) -> str:
        little = self.head[5:6] != b"\x02"  # EI_DATA
        em = int.from_bytes(self.head[18:20], "little" if little else "big")
        return _EM.get(em, f"EM_{em}")


class WheelReader:
    """One streaming pass over the zip: sizes, sha256, CRC verdicts, ELF headers."""

    def __init__(self, path: Path):
        self.path = path
        self.members: dict[str, Member] = {}
        self.duplicates: list[str] = []
        self.open_error = ""
        self._elf_cache: dict[str, bytes] = {}
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if info.filename in self.members:
                        self.duplicates.append(info.filename)
                    self.members[info.filename] = self._read(zf, info)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            self.open_error = f"not a readable zip archive: {exc}"

    @staticmethod
    def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
        m = Member(info.filename)
        h = hashlib.sha256()
        try:
            with zf.open(info) as f:
                # ZipExtFile compares the CRC-32 when the last chunk is read.
                while chunk := f.read(1 << 20):
                    if len(m.head) < 64:
                        m.head += chunk[: 64 - len(m.head)]
                    h.update(chunk)
                    m.size += len(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            m.error = str(exc) or type(exc).__name__
        m.sha256 = b64(h.digest())
        return m

    def read(self, name: str) -> bytes:
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(name)

    def elf(self, name: str) -> bytes:
        if name not in self._elf_cache:
            self._elf_cache[name] = self.read(name)
        return self._elf_cache[name]

    @property
    def elf_members(self) -> list[str]:
        return [n for n, m in self.members.items() if m.is_elf and not m.error]

    def dist_info_dirs(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self.members if n.split("/", 1)[0].endswith(".dist-info")})


@dataclass
class Context:
    """What the checks share: the wheel, what it must be, and what earlier checks read."""

    wheel: WheelReader
    variant: Variant
    arch: Arch
    policy: str
    filename: tuple[NormalizedName, Version, tuple[()] | tuple[int, str], frozenset[Tag]] | None = None
    filename_error: str = ""
    dist_info: str = ""
    metadata: dict[str, Any] | None = None  # packaging RawMetadata
    isa: dict[str, isa_mod.IsaReport] = field(default_factory=dict)
    isa_summary: str = ""

    def file_text(self, name: str) -> str:
        if name not in self.wheel.members:
            raise CheckFailed(f"{name} is missing")
        if self.wheel.members[name].error:
            raise CheckFailed(f"{name} is unreadable: {self.wheel.members[name].error}")
        return self.wheel.read(name).decode("utf-8")
