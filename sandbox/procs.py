"""Process supervision of the sandbox: its children, their logs, waiting and stopping.

Every child (master, workers, package index) runs in a session of its own
with its output appended to a log file under the sandbox root, so stopping
one never signals the caller and a failed start is explained by its log.
``until`` is the one polling loop of the sandbox and the tests.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def free_port(preferred: int) -> int:
    """``preferred`` if free on 127.0.0.1, else any free port (0 = any)."""
    for candidate in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = s.getsockname()[1]
            return port
    raise OSError("no free port")


def until(cond: Callable[[], object], timeout: float, what: str, step: float = 0.3) -> None:
    """Poll ``cond`` every ``step`` seconds until it is true; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Processes:
    """Named child processes started with one environment; ``procs["master"]`` is the Popen."""

    def __init__(self, env: Callable[[], Mapping[str, str]], logs: Path) -> None:
        self.env = env  # called at every start: the environment may grow (e.g. the images' storage)
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def __getitem__(self, name: str) -> subprocess.Popen[bytes]:
        return self.running[name]

    def __contains__(self, name: object) -> bool:
        return name in self.running

    def run(self, *cmd: str, cwd: Path | None = None) -> None:
        """Run a setup command to its end; RuntimeError with its output when it fails."""
        out = subprocess.run(list(cmd), cwd=cwd, env=dict(self.env()), capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout}{out.stderr}")

    def spawn(self, name: str, cmd: list[str], log: str) -> None:
        """Start ``cmd`` as ``name``, its output appended to ``<logs>/<log>``."""
        with (self.logs / log).open("ab") as fh:
            self.running[name] = subprocess.Popen(cmd, env=dict(self.env()), stdout=fh, stderr=subprocess.STDOUT,
                                                  start_new_session=True)

    def check_alive(self) -> None:
        """RuntimeError when a child has exited (a start that cannot succeed any more)."""
        for name, p in self.running.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see logs in {self.logs}")

    def stop(self, name: str, timeout: float = 60) -> bool:
        """SIGTERM ``name`` (as ``buildbot stop`` does) and wait; False if it was not running.

        RuntimeError when it had to be killed after ``timeout``.
        """
        p = self.running.pop(name, None)
        if p is None or p.poll() is not None:
            return False
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError(f"{name} did not stop within {timeout:.0f}s") from None
        return True

    def stop_all(self, first: tuple[str, ...] = (), timeout: float = 20) -> None:
        """SIGTERM every child (``first`` before the others), then wait; kill what is still running."""
        order = [n for n in first if n in self.running] + [n for n in self.running if n not in first]
        for name in order:
            if self.running[name].poll() is None:
                self.running[name].send_signal(signal.SIGTERM)
        for p in self.running.values():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.running.clear()
