"""The Makefile's split of what each entry point installs (``make -n -B``: nothing is run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _make_n(*args: str) -> str:
    """What ``make`` would run from scratch (``-B``: every target out of date; ``-n``: nothing is run)."""
    out = subprocess.run(["make", "-n", "-B", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_the_sandbox_only_and_make_test_the_router_too() -> None:
    """Issue 19.9: the multi-master router (crossbar, with web3) is set up where it is used, never by make run."""
    run = _make_n("run", "ONCE=1")
    assert "'.[sandbox]'" in run and "'.[test]'" not in run and "crossbar" not in run
    assert "crossbar-requirements.txt" in _make_n("test")
