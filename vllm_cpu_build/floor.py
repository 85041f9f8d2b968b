"""The floor smoke: ``smoke``'s probe once more on the oldest CPU a package promises.

variants.json names that CPU per variant and arch (``floor``): a QEMU CPU
model (``Haswell-v4``: AVX2 without AVX-512; ``neoverse-n1``: Graviton2) or
"native" where QEMU's TCG cannot be that CPU (it has no AVX-512 or AMX).
Each probe command then runs under ``qemu-<arch> -cpu MODEL`` on the
worker's own arch.  The program's own cpuid/HWCAP checks see the emulated
CPU, so torch's and oneDNN's run-time dispatch choose as on that CPU.

A SIGILL is located without touching the guest: QEMU's ``-d strace`` log
(``-D`` file) records every ``openat`` and ``mmap`` and the signal's
``si_addr``, which give the file and offset of the faulting instruction;
that file's ELF symbols give the function, and the decoder ``isa`` uses
gives the instruction.  (A signal handler inside the guest was tried
first: QEMU 7.2 x86_64 delivers it on a stack that crashes Python's
handlers.)  Python's faulthandler adds the Python line that was running.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from vllm_cpu_build.enums import Arch
from vllm_cpu_build.isa import Decoded, decode_one, elf_arch

_OPEN = re.compile(r'^\d+ open(?:at)?\((?:-?\d+,)?"([^"]*)",[^=]*\) = (\d+)$')
_MMAP = re.compile(r"^\d+ mmap\((0x[0-9a-f]+|NULL),(\d+),(\S+?),(\S+?),(\d+),(0x[0-9a-f]+|\d+)\) = (0x[0-9a-f]+)$")
_SIGILL = re.compile(r"^--- SIGILL \{.*si_addr=(0x[0-9a-f]+)")


def qemu_binary(arch: Arch) -> str | None:
    """QEMU user mode for ``arch`` on PATH (Debian's qemu-user-static names it ``qemu-<arch>-static``)."""
    return shutil.which(f"qemu-{arch}-static") or shutil.which(f"qemu-{arch}")


@dataclass(frozen=True)
class Emulator:
    """How to run one command on the floor CPU, logging its syscalls to ``log``."""

    qemu: str
    cpu: str
    log: Path

    def wrap(self, cmd: list[str], trace: bool = False) -> list[str]:
        """``cmd`` on the floor CPU; ``trace``: with the syscall log that locates a SIGILL.

        The log is only for a run that already died: a threaded program's futex
        calls would make it huge on every passing run.
        """
        self.log.unlink(missing_ok=True)  # one log per command: the fault read is this command's
        return [self.qemu, "-cpu", self.cpu, *(["-d", "strace", "-D", str(self.log)] if trace else []), *cmd]


SIGILL_EXITS = (-signal.SIGILL, 128 + signal.SIGILL)  # killed by it, or a shell/QEMU reporting it


@dataclass(frozen=True)
class Fault:
    """Where a SIGILL stopped the program."""

    pc: int
    file: str | None = None  # the mapped file holding pc
    offset: int = 0  # pc's offset in that file
    function: str | None = None  # ELF symbol (demangled) + offset into it
    instruction: Decoded | None = None

    def describe(self, site: Path | None = None) -> str:
        """``SIGILL in vllm/_C.abi3.so, function f+0x1c: vaddps zmm0,... (AVX512F)``."""
        if self.file is None:
            return f"SIGILL at {self.pc:#x}, in no file-backed mapping (generated code?)"
        where = _short_path(self.file, site)
        text = f"SIGILL in {where}" + (f", function {self.function}" if self.function else f" at {self.offset:#x}")
        if self.instruction is not None:
            ins = self.instruction
            text += f": `{ins.text}`" + (f" ({', '.join(ins.features)})" if ins.features else "")
        return text


def _short_path(path: str, site: Path | None) -> str:
    if site is not None and path.startswith(str(site).rstrip("/") + "/"):
        return path[len(str(site).rstrip("/")) + 1:]
    return path


def find_fault(log: Path, cwd: Path) -> Fault | None:
    """The last SIGILL raised by an instruction (``si_addr`` set) in a ``-d strace`` log, located."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    fds: dict[int, str] = {}
    maps: list[tuple[int, int, str, int]] = []  # start, end, file, file offset
    pc = None
    for line in lines:
        if m := _OPEN.match(line):
            fds[int(m[2])] = str(cwd / m[1]) if not m[1].startswith("/") else m[1]
        elif (m := _MMAP.match(line)) and "PROT_EXEC" in m[3] and int(m[5]) in fds:
            start = int(m[7], 16)
            maps.append((start, start + int(m[2]), fds[int(m[5])], int(m[6], 0)))
        elif m := _SIGILL.match(line):
            pc = int(m[1], 16)
    if pc is None:
        return None
    # The newest mapping of that address is the one that was live.
    hit = next((mp for mp in reversed(maps) if mp[0] <= pc < mp[1]), None)
    if hit is None:
        return Fault(pc)
    return locate(pc, hit[2], pc - hit[0] + hit[3])


def locate(pc: int, file: str, offset: int) -> Fault:
    """The function and instruction at ``offset`` of the ELF ``file`` (as much as can be read)."""
    try:
        with open(file, "rb") as f:
            elf = ELFFile(f)
            vaddr = next((offset - s["p_offset"] + s["p_vaddr"] for s in elf.iter_segments()
                          if s["p_type"] == "PT_LOAD" and s["p_offset"] <= offset < s["p_offset"] + s["p_filesz"]),
                         offset)
            function = _symbol(elf, vaddr)
            f.seek(offset)
            instruction = decode_one(elf_arch(elf), f.read(16), vaddr)
    except (OSError, ValueError) as exc:  # pyelftools raises ValueError subclasses on damaged files
        return Fault(pc, file, offset, function=f"(unreadable: {exc})")
    return Fault(pc, file, offset, function, instruction)


def _symbol(elf: ELFFile, vaddr: int) -> str | None:
    """The function symbol covering ``vaddr`` (.symtab, else .dynsym), demangled, with the offset into it."""
    for name in (".symtab", ".dynsym"):
        table = elf.get_section_by_name(name)
        if table is None or not hasattr(table, "iter_symbols"):
            continue
        for sym in table.iter_symbols():
            lo, size = sym["st_value"], sym["st_size"]
            if sym["st_info"]["type"] == "STT_FUNC" and size and lo <= vaddr < lo + size:
                return f"{_demangle(sym.name)}+{vaddr - lo:#x}"
    return None


def _demangle(name: str) -> str:
    if not name.startswith("_Z") or not shutil.which("c++filt"):
        return name
    r = subprocess.run(["c++filt", name], capture_output=True, text=True, check=False)
    return r.stdout.strip() or name


def python_line(stderr: str, script: str = "") -> str | None:
    """The innermost Python frame faulthandler printed; for the ``-c`` ``script``, its source line."""
    m = re.search(r"Fatal Python error: Illegal instruction.*?\n\s+File \"(.*?)\", line (\d+) in (\S+)", stderr, re.S)
    if m is None:
        return None
    lines = script.splitlines()
    if m[1] == "<string>" and 0 < int(m[2]) <= len(lines):
        return f"line {m[2]}: {lines[int(m[2]) - 1].strip()}"
    return f"{m[1]}, line {m[2]} in {m[3]}"
