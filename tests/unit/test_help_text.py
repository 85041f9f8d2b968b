"""Every command line's --help is plain text: no reStructuredText backticks, exit codes documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vllm_cpu_build.cli import SUBCOMMANDS
from vllm_cpu_build.helptext import describe, plain

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

COMMANDS = [
    [sys.executable, "-m", "vllm_cpu_build"],
    *[[sys.executable, "-m", "vllm_cpu_build", name] for name in SUBCOMMANDS],
    [sys.executable, "-m", "workers"],
    *[[sys.executable, "-m", "workers", name] for name in ("list", "add", "check")],
    [sys.executable, "-m", "master", "users"],
    [sys.executable, "-m", "master", "users", "add"],
    [sys.executable, "-m", "master.systemd"],
    [sys.executable, "-m", "master.cache_server"],
    [sys.executable, "-m", "sandbox"],
    [sys.executable, "-m", "vllm_cpu_build.readme"],
    [sys.executable, "-m", "testbed.fixture_upstream.demo"],
    [sys.executable, "-m", "testbed.fixture_upstream.make_repo"],
    [sys.executable, "-m", "testbed.aarch64_host"],
    [sys.executable, str(REPO / "detector" / "sync_data.py")],
    [str(BIN / "vllm-cpu-detect")],
    [str(BIN / "vllm-cpu-build")],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(Path(c[0]).name if i == 0 else p
                                                                 for i, p in enumerate(c)))
def test_help_is_plain_text(cmd: list[str]) -> None:
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")
    assert "`" not in r.stdout, [line for line in r.stdout.splitlines() if "`" in line]


# What operators run.
SERVICE = ("vllm_cpu_build", "workers", "master.systemd", "master.cache_server", "sandbox", "users")


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if len(c) == 1 or c[-1] in SERVICE],
                         ids=lambda c: Path(c[0]).name + " " + " ".join(c[2:]))
def test_top_level_help_documents_exit_codes(cmd: list[str]) -> None:
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120).stdout
    assert "exit codes" in out.lower(), out


def test_plain_and_describe() -> None:
    assert plain("``vllm-cpu-build plan``: see `make run` and :func:`x`") == "vllm-cpu-build plan: see make run and x"
    doc = "``a``: first\nparagraph.\n\nSecond ``b``."
    assert describe(doc) == "a: first paragraph."
    assert describe(doc, "More.") == "a: first paragraph. More."
    assert describe(doc, paragraph=1) == "Second b."
    assert all(len(line) <= 79 for line in describe("word " * 60).splitlines())
