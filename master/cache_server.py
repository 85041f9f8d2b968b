"""``python -m master.cache_server``: the farm's shared compile cache, a Redis server on the master host.

    python -m master.cache_server --settings /srv/vllm-cpu/settings.toml --maxmemory 20gb \\
        --config /etc/redis/vllm-cpu-ccache.conf > /etc/systemd/system/vllm-cpu-ccache.service

Every worker's ccache reads and writes this server beside its own cache
directory (``[cache]`` in the settings; ``farm/compile_cache.py``).  This
writes the server's configuration to ``--config``: bound to the address of
``[cache] remote`` (or ``--bind``, an IP address) and its port,
``requirepass`` from the secret ``[cache] password_secret``, ``maxmemory``
with ``allkeys-lru`` (the size limit: when full the least recently used
results go; writes never fail for space), no persistence (a restarted cache
starts empty and refills).  The file holds the password: mode 0640, group
``redis`` when that group exists (the server reads it, nobody else), written
atomically.  Then it prints the systemd unit that runs Debian's
``redis-server`` on it as user ``redis``, beside Debian's own
``redis-server.service`` (which stays on 127.0.0.1:6379, or is disabled).

Exit codes: 0 written and printed, 2 bad arguments or settings (the message names them).
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import re
import sys
from pathlib import Path

from farm.compile_cache import server_config
from farm.settings import SettingsError, load
from master.systemd import CACHE_STATE_DIR, cache_unit
from vllm_cpu_build.helptext import Parser, describe


def write_config(path: Path, text: str) -> None:
    """``text`` (it holds the password) to ``path``: 0640, group redis if it exists, replaced atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o640)
    # No redis group (redis-server not installed here yet) or not root: the owner's only.
    with contextlib.suppress(KeyError, PermissionError):
        os.chown(tmp, -1, grp.getgrnam("redis").gr_gid)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m master.cache_server", description=describe(__doc__),
               epilog="Exit codes: 0 written and printed, 2 bad arguments or settings.")
    p.add_argument("--settings", type=Path, help="the settings file (default: $VLLM_CPU_BUILDBOT_SETTINGS)")
    p.add_argument("--maxmemory", required=True, help="the cache's size limit in Redis units: 20gb, 512mb")
    p.add_argument("--config", type=Path, required=True, help="where the server's configuration goes (absolute)")
    p.add_argument("--bind", help="IP address(es) to listen on, space separated (default: [cache] remote's host)")
    p.add_argument("--dir", default="/var/lib/" + CACHE_STATE_DIR, help="the server's working directory")
    p.add_argument("--redis-server", default="/usr/bin/redis-server", help="the server program")
    args = p.parse_args(argv)
    try:
        settings = load(args.settings)
    except SettingsError as exc:
        p.error(str(exc))
    storage = settings.cache.storage()
    if storage is None:
        p.error("the settings have no [cache] remote: set it to redis://ADDRESS:PORT (the workers' way here)")
    if not re.fullmatch(r"[1-9]\d*(?:[kmg]b?)?", args.maxmemory.lower()):
        p.error(f"--maxmemory: a size such as 20gb or 512mb, got {args.maxmemory!r}")
    bind = args.bind or storage.host.strip("[]")
    try:
        for addr in bind.split():
            ipaddress.ip_address(addr)
    except ValueError:
        p.error(f"--bind: Redis listens on IP addresses; {bind!r} is not (give --bind ADDRESS)")
    if not args.config.is_absolute():
        p.error(f"--config: must be an absolute path, got {args.config}")
    password = ""
    if settings.cache.password_secret:
        secret = settings.master.secrets_dir / settings.cache.password_secret
        if not secret.is_file():
            p.error(f"[cache] password_secret: {secret} does not exist; create it first (0600)")
        password = secret.read_text().strip()
        try:
            storage.url(password)
        except ValueError as exc:
            p.error(f"[cache] password_secret: {exc}")
    write_config(args.config, server_config(bind, storage.port, password, args.maxmemory, args.dir))
    sys.stdout.write(cache_unit(args.config, args.redis_server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
