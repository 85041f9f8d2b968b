"""``python -m master.cache_server``: the compile cache's Redis configuration and unit, run for real.

The configuration it writes starts Debian's ``redis-server``: a password is
required, the size limit evicts least recently used results, and ccache on
two "workers" (two cache directories) shares compiles through it.  The unit
passes ``systemd-analyze verify``.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from master.cache_server import main
from sandbox.procs import free_port
from testbed.redis_server import available
from tests.unit.test_production import needs_systemd, verify
from vllm_cpu_build.compile_cache import parse_print_stats

needs_redis = pytest.mark.skipif(not available() or shutil.which("ccache") is None,
                                 reason="needs redis-server and ccache (make setup installs them)")


def _settings(tmp: Path, port: int, password: str | None) -> Path:
    (tmp / "secrets").mkdir(mode=0o700)
    if password is not None:
        secret = tmp / "secrets" / "ccache-redis"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
    path = tmp / "settings.toml"
    path.write_text(f'[master]\nsecrets_dir = "secrets"\n\n[cache]\nremote = "redis://127.0.0.1:{port}"\n'
                    'password_secret = "ccache-redis"\n')
    return path


def _cli(port: int, password: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password} if password else {"PATH": "/usr/bin:/bin"}
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, env=env, timeout=20,
                          check=False)


@needs_redis
def test_the_written_configuration_runs_a_cache_the_workers_share(tmp_path: Path, capsys) -> None:
    port, password = free_port(0), secrets.token_urlsafe(18)
    conf, data = tmp_path / "vllm-cpu-ccache.conf", tmp_path / "data"
    data.mkdir()
    assert main(["--settings", str(_settings(tmp_path, port, password)), "--maxmemory", "64mb",
                 "--config", str(conf), "--dir", str(data)]) == 0
    assert conf.stat().st_mode & 0o777 == 0o640  # it holds the password
    assert password not in capsys.readouterr().out  # the unit names the file, never the password
    server = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while _cli(port, password, "PING").stdout.strip() != "PONG":
            assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
            time.sleep(0.1)
        assert "NOAUTH" in _cli(port, None, "SET", "k", "v").stdout  # no password, no cache
        assert _cli(port, password, "CONFIG", "GET", "maxmemory-policy").stdout.split() == ["maxmemory-policy",
                                                                                           "allkeys-lru"]
        assert _cli(port, password, "CONFIG", "GET", "maxmemory").stdout.split() == ["maxmemory", "67108864"]
        # Two workers' ccache: the second, with an empty directory, gets the first one's object.
        (tmp_path / "k.c").write_text("int twice(int x) { return 2 * x; }\n")
        for worker in ("a", "b"):
            env = {"PATH": "/usr/bin:/bin", "CCACHE_DIR": str(tmp_path / worker),
                   "CCACHE_REMOTE_STORAGE": f"redis://{password}@127.0.0.1:{port}"}
            subprocess.run(["ccache", "gcc", "-c", "k.c", "-o", f"k-{worker}.o"], cwd=tmp_path, env=env, check=True)
            stats = parse_print_stats(subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True,
                                                     text=True, check=True).stdout)
        assert stats["remote_storage_hit"] == 1 and stats.get("remote_storage_error", 0) == 0, stats
    finally:
        server.terminate()
        server.wait(10)


def test_refusals_name_what_is_missing(tmp_path: Path, capsys) -> None:
    settings = _settings(tmp_path, 6379, None)  # the secret file is not there yet
    conf = tmp_path / "c.conf"
    for args, says in ((["--maxmemory", "64mb"], "password_secret: .* does not exist"),
                       (["--maxmemory", "lots"], "--maxmemory: a size"),
                       (["--maxmemory", "1gb", "--bind", "cache.example.org"], "--bind: Redis listens on IP")):
        with pytest.raises(SystemExit) as exc:
            main(["--settings", str(settings), "--config", str(conf), *args])
        assert exc.value.code == 2
        assert re.search(says, capsys.readouterr().err)
    assert not conf.exists()


@needs_systemd
@needs_redis
def test_the_unit_verifies(tmp_path: Path, capsys) -> None:
    port = free_port(0)
    assert main(["--settings", str(_settings(tmp_path, port, "pw")), "--maxmemory", "1gb",
                 "--config", str(tmp_path / "vllm-cpu-ccache.conf")]) == 0
    unit = tmp_path / "vllm-cpu-ccache.service"
    unit.write_text(capsys.readouterr().out)
    assert "Type=notify" in unit.read_text() and "--supervised systemd" in unit.read_text()
    assert verify(unit) == ""
