"""``[cache]``: the farm's shared compile cache, a Redis server ccache's remote storage uses.

Every worker's builds read and write it beside their own ccache directory,
so a fresh or re-imaged worker starts warm (``vllm_cpu_build.compile_cache``
is the worker's side; ``master/README.md`` "Shared compile cache" the
server).  The URL names no credentials: the password is a Buildbot secret
that the build step puts into the URL for the build's environment only
(``steps/compile_cache.py``).  Off by default: the sandbox starts a Redis of
its own when one is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.checks import SettingsError, no_credentials, secret_name
from vllm_cpu_build.compile_cache import RemoteStorage


@dataclass(frozen=True)
class Cache:
    # redis://HOST[:PORT][/DB], reachable from every worker, no password; optional ccache
    # attributes after it (redis://10.0.0.1:6379|connect-timeout=500). "" = each worker's own cache only.
    remote: str = ""
    password_secret: str = ""  # secret file holding the server's requirepass; "" = no AUTH

    def storage(self) -> RemoteStorage | None:
        return RemoteStorage.parse(self.remote) if self.remote else None

    def check(self) -> None:
        no_credentials("cache.remote", self.remote.split("|", 1)[0])
        if self.remote:
            try:
                self.storage()
            except ValueError as exc:
                raise SettingsError(f"cache.remote: {exc}") from None
        secret_name("cache.password_secret", self.password_secret)
        if self.password_secret and not self.remote:
            raise SettingsError("cache.password_secret: set while cache.remote is empty")


def server_config(bind: str, port: int, password: str, maxmemory: str, data_dir: str) -> str:
    """redis.conf for a compile cache: LRU-evicting at ``maxmemory``, nothing written to disk."""
    lines = [
        f"bind {bind}",
        f"port {port}",
        "protected-mode yes",
        f"maxmemory {maxmemory}",
        "maxmemory-policy allkeys-lru",  # full = the least recently used results go, never a refused write
        'save ""',  # a cache: a restart starts empty rather than spend minutes loading a snapshot
        "appendonly no",
        f"dir {data_dir}",
    ]
    if password:
        lines.append(f"requirepass {password}")
    return "\n".join(lines) + "\n"
