"""``sandbox.procs``: the sandbox's children, with real processes (sh, sleep)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from sandbox.procs import Processes, free_port, until


def env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "GREETING": "hello"}


def test_spawn_logs_to_a_file_with_the_given_environment(tmp_path: Path) -> None:
    procs = Processes(env, tmp_path)
    procs.spawn("greeter", ["sh", "-c", 'echo "$GREETING"; sleep 30'], "greeter.log")
    until(lambda: (tmp_path / "greeter.log").read_text() == "hello\n", 10, "the greeting")
    assert "greeter" in procs and procs["greeter"].poll() is None
    assert procs.stop("greeter", timeout=10) is True
    assert "greeter" not in procs and procs.stop("greeter") is False  # stopping twice is no error


def test_a_child_that_exited_is_named(tmp_path: Path) -> None:
    procs = Processes(env, tmp_path)
    procs.spawn("index", ["sh", "-c", "exit 3"], "index.log")
    procs["index"].wait(10)
    with pytest.raises(RuntimeError, match="index exited with 3"):
        procs.check_alive()


def test_run_raises_with_the_output_of_a_failed_command(tmp_path: Path) -> None:
    procs = Processes(env, tmp_path)
    procs.run("sh", "-c", "true")
    with pytest.raises(RuntimeError, match="no such thing"):
        procs.run("sh", "-c", "echo no such thing >&2; exit 1")


def test_stop_all_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    procs = Processes(env, tmp_path)
    procs.spawn("stubborn", ["sh", "-c", "trap '' TERM; sleep 30"], "stubborn.log")
    procs.spawn("polite", ["sleep", "30"], "polite.log")
    time.sleep(0.3)  # the trap is set
    stubborn, polite = procs["stubborn"], procs["polite"]
    t0 = time.monotonic()
    procs.stop_all(first=("polite",), timeout=1)
    assert time.monotonic() - t0 < 10
    assert polite.returncode == -15 and stubborn.returncode == -9
    assert procs.running == {}


def test_until_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        until(lambda: False, 0.2, "the impossible", step=0.05)


def test_free_port_prefers_the_asked_one_and_falls_back() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        other = free_port(port)
        assert other != port and other > 0
    assert free_port(port) == port
