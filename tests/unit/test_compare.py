"""``compare``: two wheels, member by member, ELF sections named (real gcc objects, real zips)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.wheelkit import compile_shared, have, make_wheel
from vllm_cpu_build.compare import compare, elf_sections
from vllm_cpu_build.enums import DiffKind
from vllm_cpu_build.results import CompareResult, parse_result

ROOT = Path(__file__).resolve().parents[2]
SOURCE = 'const char *stamp(void) { return STAMP; }\nint add(int a, int b) { return a + b; }\n'

pytestmark = pytest.mark.skipif(not have("gcc"), reason="needs gcc")


def _so(tmp: Path, stamp: str) -> bytes:
    # The same length, so only the string's bytes differ (what a __DATE__ does).
    return compile_shared(SOURCE, tmp / f"m{stamp}" / "m.so", [f'-DSTAMP="{stamp}"']).read_bytes()


def _wheel(out: Path, so: bytes, extra: dict[str, bytes] | None = None) -> Path:
    return make_wheel(out, "vllm-cpu", "0.12.0", {"vllm/_C.abi3.so": so, "vllm/__init__.py": b"x = 1\n",
                                                  **(extra or {})})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vllm_cpu_build", "compare", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_identical_wheels(tmp_path: Path) -> None:
    so = _so(tmp_path, "Dec  5 2026")
    a, b = _wheel(tmp_path / "a", so), _wheel(tmp_path / "b", so)
    res = compare(a, b)
    assert res.identical and res.differences == [] and res.sha256["a"] == res.sha256["b"]
    out = _cli(str(a), str(b), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["identical"] is True and doc["differences"] == []
    assert set(doc["sha256"]) == {"a", "b"} and len(doc["sha256"]["a"]) == 64


def test_elf_content_names_the_differing_sections(tmp_path: Path) -> None:
    a = _wheel(tmp_path / "a", _so(tmp_path, "Dec  5 2026"))
    b = _wheel(tmp_path / "b", _so(tmp_path, "Dec  6 2026"))
    res = compare(a, b)
    assert not res.identical and res.sha256["a"] != res.sha256["b"]
    by_member = {d.member: d for d in res.differences}
    so = by_member["vllm/_C.abi3.so"]
    assert so.kind is DiffKind.CONTENT
    assert ".rodata" in so.sections, so.sections
    assert ".text" not in so.sections  # the code is the same
    # RECORD lists the module's other hash: a text member, its first differing line named.
    record = by_member["vllm_cpu-0.12.0.dist-info/RECORD"]
    assert record.kind is DiffKind.CONTENT and record.sections == [] and "vllm/_C.abi3.so" in record.detail
    assert set(by_member) == {"vllm/_C.abi3.so", "vllm_cpu-0.12.0.dist-info/RECORD"}

    out = _cli(str(a), str(b), "--json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "compare" and doc["identical"] is False
    so_doc = next(d for d in doc["differences"] if d["member"] == "vllm/_C.abi3.so")
    assert so_doc["kind"] == "content" and ".rodata" in so_doc["sections"]
    # The master reads it back typed.
    parsed = parse_result(out.stdout)
    assert isinstance(parsed, CompareResult) and parsed.exit_code == 1
    assert ".rodata" in out.stderr  # the human summary goes to stderr with --json


def test_members_only_in_one_wheel_and_metadata(tmp_path: Path) -> None:
    so = _so(tmp_path, "x")
    a = _wheel(tmp_path / "a", so, {"vllm/only_a.py": b""})
    b = _wheel(tmp_path / "b", so, {"vllm/only_b.py": b""})
    kinds = {d.member: d.kind for d in compare(a, b).differences}
    assert kinds["vllm/only_a.py"] is DiffKind.ONLY_IN_A and kinds["vllm/only_b.py"] is DiffKind.ONLY_IN_B

    # Same bytes, another mode and date: a zipinfo difference naming the fields.
    c = tmp_path / "c" / a.name
    c.parent.mkdir()
    with zipfile.ZipFile(a) as zin, zipfile.ZipFile(c, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "vllm/__init__.py":
                info.external_attr = (0o100755 << 16)
                info.date_time = (2026, 12, 5, 7, 0, 0)
            zout.writestr(info, data)
    diffs = compare(a, c).differences
    assert [(d.member, d.kind) for d in diffs] == [("vllm/__init__.py", DiffKind.ZIPINFO)]
    assert set(diffs[0].fields) == {"mode", "date_time"} and "755" in diffs[0].detail

    # Same members and metadata in another order: an archive-wide difference.
    d = tmp_path / "d" / a.name
    d.parent.mkdir()
    with zipfile.ZipFile(a) as zin, zipfile.ZipFile(d, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in reversed(zin.infolist()):
            zout.writestr(info, zin.read(info))
    diffs = compare(a, d).differences
    assert [(x.member, x.kind, x.fields) for x in diffs] == [("", DiffKind.ARCHIVE, ["order"])]


def test_section_only_in_one_elf(tmp_path: Path) -> None:
    a = compile_shared(SOURCE, tmp_path / "a" / "m.so", ['-DSTAMP="x"']).read_bytes()
    b = compile_shared(SOURCE + 'int counter;\n__attribute__((section(".extra"))) int marker = 1;\n',
                       tmp_path / "b" / "m.so", ['-DSTAMP="x"']).read_bytes()
    assert ".extra" in elf_sections(a, b)


@pytest.mark.parametrize("case", ["missing", "not_zip"])
def test_bad_input_exits_2(tmp_path: Path, case: str) -> None:
    good = _wheel(tmp_path / "a", b"\x7fELF not really")
    other = tmp_path / "nothing.whl"
    if case == "not_zip":
        other.write_text("not a zip")
    out = _cli(str(good), str(other), "--json")
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert json.loads(out.stdout)["kind"] == "error" and "Traceback" not in out.stderr
    assert str(other) in out.stderr


def test_help_documents_the_exit_codes() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    assert "0 the wheels are identical, 1 they differ" in " ".join(out.stdout.split())
    assert "2 bad input" in " ".join(out.stdout.split())
