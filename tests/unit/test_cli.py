"""vllm-cpu-build as a worker runs it: ``python -m steps`` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_cpu_build.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vllm_cpu_build", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_documents_exit_codes_and_every_subcommand() -> None:
    out = run("--help")
    assert out.returncode == 0
    for code in ("0  success", "1  the step ran and failed", "2  bad input", "3  skipped: smoke"):
        assert code in out.stdout
    for name in SUBCOMMANDS:
        assert name in out.stdout, f"subcommand {name} missing from --help"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name: str) -> None:
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("patch", "--variant", "vllm-cpu-sse4", "--src", "."),
        ("verify", "--variant", "vllm-cpu-sse4", "--arch", "x86_64", "x.whl"),
        ("verify", "--variant", "vllm-cpu-avx512", "--arch", "aarch64", "x.whl"),
        ("build", "--variant", "vllm-cpu", "--src", "/nonexistent", "--out", "/tmp/x"),
        ("nosuchcommand",),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args: tuple[str, ...]) -> None:
    out = run(*args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "error" in out.stderr and "Traceback" not in out.stderr


def test_build_with_relative_paths(fixture_repo: Path, tmp_path: Path) -> None:
    # Workers pass paths relative to the build directory while pip runs elsewhere.
    shutil.copytree(fixture_repo, tmp_path / "src", symlinks=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def tool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vllm_cpu_build", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    out = tool("patch", "--variant", "vllm-cpu", "--src", "src", "--arch", "x86_64")
    assert out.returncode == 0, out.stderr
    out = tool("build", "--variant", "vllm-cpu", "--src", "src", "--out", "dist", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = Path(json.loads(out.stdout)["wheel"])
    assert wheel.parent == tmp_path / "dist" and wheel.is_file()
