"""Shared helpers for the vllm-cpu-detect tests (imported, not collected)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DETECTOR = REPO / "detector"
SRC = DETECTOR / "src"
FIXTURES = REPO / "testbed" / "cpuinfo"  # real machines' /proc/cpuinfo and macOS sysctl output

if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def run(*args: str, python: str = sys.executable, **kw) -> subprocess.CompletedProcess:
    """Run the detector as a real process, from the source tree."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([python, "-m", "vllm_cpu_detect", *args], capture_output=True, text=True,
                          env=env, timeout=120, **kw)


def run_json(*args: str) -> tuple[int, dict]:
    res = run("--json", *args)
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def fixture(name: str) -> str:
    return str(FIXTURES / name)
