"""``floor``: QEMU user mode as a package's oldest CPU, and a SIGILL located from QEMU's log.

Real parts only: code compiled here (gcc, and the aarch64 cross gcc), run
under Debian's qemu-user-static with the CPU models variants.json names.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.wheelkit import A64_CC, compile_a64, compile_shared, have
from vllm_cpu_build import floor
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.variants import load

FLOORS = {a: s.qemu_floor for a, s in load().get("vllm-cpu").arches.items()}
QEMU = {a: floor.qemu_binary(a) for a in Arch}
needs_x86 = pytest.mark.skipif(QEMU[Arch.X86_64] is None, reason="qemu-user-static is not installed")
needs_a64 = pytest.mark.skipif(QEMU[Arch.AARCH64] is None or not have(A64_CC),
                               reason="needs qemu-aarch64-static and the aarch64 cross gcc")

X86 = r"""
#include <immintrin.h>
__attribute__((target("avx2"))) int with_avx2(int s) {
    __m256i v = _mm256_set1_epi32(s);
    return _mm256_extract_epi32(_mm256_add_epi32(v, v), 0);
}
__attribute__((target("avx512f"))) int with_avx512(int s) {
    __m512i v = _mm512_set1_epi32(s);
    return _mm512_reduce_add_epi32(_mm512_add_epi32(v, v)) / 16;
}
"""
CALL = "import ctypes, sys\nlib = ctypes.CDLL(sys.argv[1])\nprint(getattr(lib, sys.argv[2])(3))\n"


def _run(emu: floor.Emulator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(emu.wrap(list(args), trace=True), capture_output=True, text=True, check=False,
                          timeout=300)


@needs_x86
def test_avx512_stops_on_the_x86_floor_and_is_named(tmp_path: Path) -> None:
    lib = compile_shared(X86, tmp_path / "libfloor.so")
    emu = floor.Emulator(QEMU[Arch.X86_64], FLOORS[Arch.X86_64], tmp_path / "strace.log")
    assert emu.cpu == "Haswell-v4"
    ok = _run(emu, sys.executable, "-c", CALL, str(lib), "with_avx2")
    assert (ok.returncode, ok.stdout.strip()) == (0, "6"), ok.stderr
    assert floor.find_fault(emu.log, tmp_path) is None  # no SIGILL, nothing located

    bad = _run(emu, sys.executable, "-X", "faulthandler", "-c", CALL, str(lib), "with_avx512")
    assert bad.returncode == -signal.SIGILL, bad.stderr
    fault = floor.find_fault(emu.log, tmp_path)
    assert fault is not None and fault.file == str(lib)
    assert fault.function is not None and fault.function.startswith("with_avx512+")
    assert fault.instruction is not None and "AVX512F" in fault.instruction.features
    assert fault.describe(tmp_path) == (f"SIGILL in libfloor.so, function {fault.function}: "
                                        f"`{fault.instruction.text}` ({', '.join(fault.instruction.features)})")
    # faulthandler's frame of the -c program, as its source line.
    assert floor.python_line(bad.stderr, CALL) == "line 3: print(getattr(lib, sys.argv[2])(3))"


def test_a_fault_outside_any_file_and_an_empty_log(tmp_path: Path) -> None:
    log = tmp_path / "strace.log"
    log.write_text("7 mmap(NULL,4096,PROT_EXEC|PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0) = 0x4000\n"
                   "--- SIGILL {si_signo=SIGILL, si_code=2, si_addr=0x0000000000004010} ---\n")
    fault = floor.find_fault(log, tmp_path)
    assert fault == floor.Fault(0x4010)
    assert fault.describe() == "SIGILL at 0x4010, in no file-backed mapping (generated code?)"
    assert floor.find_fault(tmp_path / "missing.log", tmp_path) is None


A64_PROGRAM = r"""
void _start(void) {
    __asm__ volatile(INSN ::: "v0");
    __asm__ volatile("mov x0, #0\n mov x8, #93\n svc #0");  /* exit(0) */
}
"""


@needs_a64
@pytest.mark.parametrize(("insn", "march", "runs"), [
    ("sdot v0.4s, v1.16b, v2.16b", "armv8.2-a+dotprod+fp16", True),  # Graviton2's own ISA
    ("bfdot v0.4s, v1.8h, v2.8h", "armv8.2-a+dotprod+fp16+bf16", False),  # Graviton3's, not Graviton2's
])
def test_neoverse_n1_runs_dotprod_and_stops_bf16(tmp_path: Path, insn: str, march: str, runs: bool) -> None:
    prog = tmp_path / "prog"
    src = tmp_path / "prog.c"
    src.write_text(A64_PROGRAM.replace("INSN", f'"{insn}"'))
    subprocess.run([A64_CC, "-O1", "-static", "-nostdlib", "-ffreestanding", f"-march={march}", str(src), "-o",
                    str(prog)], check=True, capture_output=True)
    emu = floor.Emulator(QEMU[Arch.AARCH64], FLOORS[Arch.AARCH64], tmp_path / "strace.log")
    assert emu.cpu == "neoverse-n1"
    r = _run(emu, str(prog))
    assert r.returncode == (0 if runs else -signal.SIGILL), r.stderr
    fault = floor.find_fault(emu.log, tmp_path)
    assert (fault is None) == runs
    if not runs:  # the program itself is mapped by QEMU, not by mmap: its entry point is the fault
        with open(prog, "rb") as f:
            assert fault is not None and fault.pc == ELFFile(f)["e_entry"]


@pytest.mark.skipif(not have(A64_CC), reason="needs the aarch64 cross gcc")
def test_an_aarch64_module_fault_is_named_with_function_and_bf16(tmp_path: Path) -> None:
    lib = compile_a64("bf16", tmp_path / "libbf16.so")
    with open(lib, "rb") as f:
        elf = ELFFile(f)
        sym = next(s for s in elf.get_section_by_name(".dynsym").iter_symbols() if s.name == "bf_dot")
        seg = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1
                   and s["p_vaddr"] <= sym["st_value"] < s["p_vaddr"] + s["p_memsz"])
        offset = sym["st_value"] - seg["p_vaddr"] + seg["p_offset"]
    fault = floor.locate(0x7F0000001000, str(lib), offset)
    assert fault.function == "bf_dot+0x0"
    assert fault.instruction is not None and fault.instruction.text.startswith("bfdot")
    assert "BF16" in fault.instruction.features
    assert fault.describe(tmp_path).startswith("SIGILL in libbf16.so, function bf_dot+0x0: `bfdot ")
