"""``build`` on the fixture upstream: five variants, verify, the ISA leak, refusals."""

from __future__ import annotations

import dataclasses
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
from vllm_cpu_build import abi3, build, buildenv, buildtools, fetchcontent, patch, plan, provenance
from vllm_cpu_build.buildroot import Runner
from vllm_cpu_build.cli import build_parser
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.enums import Arch, BuildEnvKind
from vllm_cpu_build.errors import UsageError
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
    res = build.build(build.BuildOptions(variant, src, tmp_path / "dist", log=io.StringIO(), fetch_mirror=MIRROR))
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
    compiler = buildtools.probe_compiler(dict(os.environ))
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
    assert buildtools.compiler_problem(CATALOG.get("vllm-cpu-avx512"), "x86_64", cmake.read_text(), compiler) is None


def test_abi3_status_rejects_version_specific_modules(tmp_path: Path) -> None:
    whl = tmp_path / "vllm_cpu-0.12.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("vllm/_C.cpython-311-x86_64-linux-gnu.so", b"\x7fELF")
    ok, why = abi3.abi3_status(whl)
    assert not ok and "_C.cpython-311" in why


# --- FetchContent sources and CMake arguments -------------------------------------


def test_fetch_declarations_of_the_fixture_and_mirror_lookup(fixture_repo: Path, tmp_path: Path) -> None:
    assert fetchcontent.declarations(fixture_repo) == {"isahelper": "v1.0"}
    chosen, notes = fetchcontent.sources(fixture_repo, {}, MIRROR)
    assert chosen == {"isahelper": (MIRROR / "isahelper" / "v1.0").resolve()} and not notes
    empty = tmp_path / "mirror"
    empty.mkdir()
    chosen, notes = fetchcontent.sources(fixture_repo, {}, empty)
    assert chosen == {} and "isahelper v1.0 is not in the mirror" in notes[0]
    # An explicit source wins; the mirror flag forbids downloads; arguments with spaces are refused.
    chosen, _ = fetchcontent.sources(fixture_repo, {"isahelper": tmp_path}, MIRROR)
    assert chosen == {"isahelper": tmp_path.resolve()}
    args = fetchcontent.cmake_options(chosen, True, ["-DFOO=1"])
    assert args == [f"-DFETCHCONTENT_SOURCE_DIR_ISAHELPER={tmp_path.resolve()}",
                    "-DFETCHCONTENT_FULLY_DISCONNECTED=ON", "-DFOO=1"]
    with pytest.raises(UsageError, match="whitespace"):
        fetchcontent.cmake_options({}, False, ["-DA=b c"])
    with pytest.raises(UsageError, match="NAME=DIR"):
        fetchcontent.parse_source_option(["isahelper"])


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


# --- the options object and the phases -------------------------------------------


def test_options_from_the_command_line(fixture_repo: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "build", "--variant", "vllm-cpu", "--src", str(fixture_repo), "--out", "rel/out", "--arch", "arm64",
        "--build-env", "interpreter", "--fetch-source", f"isahelper={tmp_path}", "--cmake-arg=-DA=1", "--no-strip",
        "--root-bind", str(tmp_path), "--max-jobs", "3"])
    opts = build.BuildOptions.from_args(args)
    assert opts.variant.package == "vllm-cpu" and opts.src == fixture_repo.resolve()
    assert opts.out == (Path.cwd() / "rel" / "out").resolve()
    assert opts.arch is Arch.AARCH64 and opts.build_env is BuildEnvKind.INTERPRETER and opts.max_jobs == 3
    assert opts.fetch_source == {"isahelper": tmp_path} and opts.cmake_args == ("-DA=1",)
    assert (opts.strip, opts.debug_archive, opts.root_bind, opts.torch_index) == (False, False, (tmp_path,), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.strip = True  # type: ignore[misc]


def test_options_refuse_what_cannot_go_together(tmp_path: Path) -> None:
    variant = CATALOG.get("vllm-cpu")
    with pytest.raises(UsageError, match="--torch chooses what the managed build env installs"):
        build.BuildOptions(variant, tmp_path, tmp_path, torch="torch==2.8.0", build_env=BuildEnvKind.INTERPRETER)
    with pytest.raises(UsageError, match="--build-env 'venv': managed or interpreter"):
        build.BuildOptions(variant, tmp_path, tmp_path, build_env="venv")  # type: ignore[arg-type]


@pytest.fixture
def patched(fixture_repo: Path, tmp_path: Path) -> Path:
    if host_arch() != "x86_64":
        pytest.skip("the fixture is patched for x86_64 here")
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    patch.patch_tree(src, CATALOG.get("vllm-cpu"), Arch.X86_64, "0.12.0")
    return src


def test_target_phase_holds_the_tree_to_its_stamp(patched: Path, tmp_path: Path) -> None:
    variant = CATALOG.get("vllm-cpu")
    target = build._target(build.BuildOptions(variant, patched, tmp_path / "out"))
    assert target.arch is Arch.X86_64 and target.stamp.full_version == "0.12.0"
    assert target.stamp.pinned_flags == ["avx2"] and target.stamp.variant == "vllm-cpu"
    with pytest.raises(UsageError, match="is patched for x86_64, not aarch64"):
        build._target(build.BuildOptions(variant, patched, tmp_path / "out", arch=Arch.AARCH64))
    with pytest.raises(UsageError, match="--python 3.9: the tree is patched for Python 3.10"):
        build._target(build.BuildOptions(variant, patched, tmp_path / "out", python="3.9"))
    stamp = patched / patch.STAMP
    doc = json.loads(stamp.read_text())
    del doc["arch"]
    stamp.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"damaged stamp \(.vllm-cpu-build.json: missing 'arch'\)"):
        build._target(build.BuildOptions(variant, patched, tmp_path / "out"))


def test_environment_phase_sets_every_switch_and_drops_the_workers_own(patched: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """A stray VLLM_* or CMAKE_ARGS on the worker never reaches the build; every ISA switch is set explicitly."""
    monkeypatch.setenv("VLLM_CPU_AVX512BF16", "1")
    monkeypatch.setenv("VLLM_SOMETHING_ELSE", "1")
    monkeypatch.setenv("CMAKE_ARGS", "-DEVIL=ON")
    opts = build.BuildOptions(CATALOG.get("vllm-cpu"), patched, tmp_path / "out", fetch_mirror=MIRROR, max_jobs=2,
                              cmake_args=("-DVLLM_FIXTURE_EXTRA=ON",))
    target = build._target(opts)
    need = buildenv.needs(patched, Arch.X86_64, "3.11")
    prep = build._Prepared(Runner(), sys.executable, "3.11", need, {}, provenance.BuildEnvInfo(BuildEnvKind.MANAGED))
    env = build._environment(opts, target, prep)
    assert env.full["VLLM_CPU_AVX512BF16"] == "0" and env.full["VLLM_CPU_DISABLE_AVX512"] == "true"
    assert "VLLM_SOMETHING_ELSE" not in env.full and "VLLM_SOMETHING_ELSE" in env.dropped
    helper = (MIRROR / "isahelper" / "v1.0").resolve()
    assert env.cmake_args == [f"-DFETCHCONTENT_SOURCE_DIR_ISAHELPER={helper}", "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
                              "-DVLLM_FIXTURE_EXTRA=ON"]
    assert env.full["CMAKE_ARGS"] == " ".join(env.cmake_args) and "-DEVIL=ON" not in env.full["CMAKE_ARGS"]
    assert env.full["FETCHCONTENT_SOURCE_DIR_ISAHELPER"] == str(helper)
    assert env.full["MAX_JOBS"] == "2" and env.full["PATH"].startswith(str(Path(sys.executable).parent))
    assert env.variant_env["SETUPTOOLS_SCM_PRETEND_VERSION"] == "0.12.0"
