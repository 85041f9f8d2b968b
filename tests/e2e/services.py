"""Real local services for the master tests: a pypiserver index and small wheels.

Only 127.0.0.1, free ports chosen by the OS.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


class PyPIServer:
    """``pypi-server`` on 127.0.0.1 serving (and accepting uploads into) ``root``."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        root.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).with_name("pypi-server")
        self.proc = subprocess.Popen(
            [str(exe), "run", "-p", str(self.port), "-i", "127.0.0.1", "-a", ".", "-P", ".",
             "--disable-fallback", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_http(self.simple_url, proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def stop(self) -> None:
        stop_process(self.proc)


def make_wheel(dest: Path, dist: str, version: str, tag: str) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) named ``dist-version-tag.whl``."""
    name = f"{dist}-{version}-{tag}.whl"
    di = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": b"",
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n"
                          f"Summary: test wheel\n".encode(),
        f"{di}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n".encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{di}/RECORD,,")
    files[f"{di}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest / name, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return dest / name


def adopt(db: Path | str, simple_url: str, *wheels: Path, reason: str = "planted by the test as published",
          env: dict[str, str] | None = None) -> str:
    """Record wheels already on the index as this farm's in a master's custody ledger, the way a
    maintainer adopts wheels published before the ledger (``python -m master ledger adopt``); its stdout.

    ``db``: a SQLite file, or a database URL (``env`` may carry ``PGPASSWORD``)."""
    if not wheels:
        return ""
    url = f"sqlite:///{db}" if isinstance(db, Path) else db
    environ = {**os.environ, **(env or {})}
    repo = Path(__file__).resolve().parents[2]
    deadline = time.monotonic() + 30  # pypiserver lists a file put in its directory within moments
    while True:
        r = subprocess.run([sys.executable, "-m", "master", "ledger", "--db-url", url, "adopt",
                            "--simple-url", simple_url, "--reason", reason, *[w.name for w in wheels]],
                           capture_output=True, text=True, cwd=repo, timeout=120, env=environ)
        if r.returncode == 0 or "not on the index" not in r.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.returncode == 0, r.stderr
    return r.stdout


def unit_service(text: str) -> tuple[list[str], dict[str, str], str]:
    """(ExecStart argv, Environment, WorkingDirectory) of a unit's [Service] section."""
    section, argv, env, cwd = "", [], {}, "/"
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if key == "ExecStart":
                argv = shlex.split(value)
            elif key == "Environment":
                for item in shlex.split(value):
                    k, v = item.split("=", 1)
                    env[k] = v
            elif key == "WorkingDirectory":
                cwd = value
    return argv, env, cwd
