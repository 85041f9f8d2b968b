"""A real Redis server (Debian's ``redis-server``) for the sandbox, the tests and the bench.

Configured as the farm's compile cache is (``farm.compile_cache.server_config``,
which ``master/cache_server.py`` writes for production): bound to one address,
a password, ``maxmemory`` with ``allkeys-lru``, no persistence.  The configuration (it holds the password)
is a 0600 file, never a command line.  ``kill`` stops it the hard way (a
cache host that dies); ``set_maxmemory`` makes it full without a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from farm.compile_cache import server_config
from vllm_cpu_build.compile_cache import RemoteStorage


def available() -> bool:
    return shutil.which("redis-server") is not None


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with state (config, log) under ``root``."""

    def __init__(self, root: Path, port: int, password: str = "", maxmemory: str = "64mb") -> None:
        self.root, self.port, self.password, self.maxmemory = root, port, password, maxmemory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The settings' ``[cache] remote``: no password."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        """``CCACHE_REMOTE_STORAGE`` with the password, as a build step hands it to a build."""
        return RemoteStorage.parse(self.url).url(self.password)

    def start(self) -> RedisServer:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(server_config("127.0.0.1", self.port, self.password, self.maxmemory, str(self.root)))
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - the server's for its lifetime
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while self.command("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.root / 'redis.log'}")
            time.sleep(0.05)
        return self

    def command(self, *args: str) -> str:
        """``redis-cli`` (the password in its environment, not on a command line); '' when the server is down."""
        env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password else None
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args], capture_output=True,
                           text=True, env=env, timeout=20, check=False)
        return r.stdout.strip() if r.returncode == 0 and "Could not connect" not in r.stdout else ""

    def keys(self) -> int:
        return int(self.command("DBSIZE") or 0)

    def set_maxmemory(self, value: str) -> None:
        self.command("CONFIG", "SET", "maxmemory", value)

    def kill(self) -> None:
        """SIGKILL: the cache host is gone."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
