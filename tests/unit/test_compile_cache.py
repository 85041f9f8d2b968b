"""The farm's shared compile cache, worker side: real redis-server, real ccache, real compiler, fixture upstream.

Two "workers" are two ccache directories and two checkouts at different
paths; both get the remote storage the build step would hand them.  A fresh
one builds what the other built from the remote; a remote that is down or
full costs only time, and the build's result and log say so.
"""

from __future__ import annotations

import io
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from farm.compile_cache import Cache
from farm.settings import REPO_ROOT, SettingsError, parse
from farm.settings import load as load_settings
from sandbox.procs import free_port
from testbed.fixture_upstream import MIRROR
from testbed.redis_server import RedisServer, available
from vllm_cpu_build import build, compile_cache, patch
from vllm_cpu_build.compile_cache import RemoteStorage, parse_print_stats
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.results import BuildResult, CompileCache
from vllm_cpu_build.variants import load

VARIANT = load().get("vllm-cpu")


# --------------------------------------------------------------------------- the formats


def test_remote_storage_url_password_and_redaction() -> None:
    st = RemoteStorage.parse("redis://10.0.0.1|connect-timeout=500")
    assert (st.host, st.port, st.attributes) == ("10.0.0.1", 6379, "|connect-timeout=500")
    assert st.url("Abc-1_2.x~") == "redis://Abc-1_2.x~@10.0.0.1:6379|connect-timeout=500"
    assert RemoteStorage.parse("redis://s3cret@h:7000/2").redacted() == "redis://***@h:7000/2"
    with pytest.raises(ValueError, match="letters, digits"):
        st.url("p@ss/word")  # ccache would read the URL as it is: refused, never half-used
    for bad in ("http://h:80/", "redis://user:pw@h", "redis://h:port", "redis://h a"):
        with pytest.raises(ValueError):
            RemoteStorage.parse(bad)
    assert compile_cache.describe_remote("redis://user:pw@h") == "(a remote storage not of the form redis://..., " \
                                                                 "not shown)"


def test_stats_log_counts_increments() -> None:
    log = "# /s/a.c\ncache_miss\nlocal_storage_write\nremote_storage_error\n# /s/b.c\ndirect_cache_hit\n" \
          "local_storage_hit\n# /s/c.c\ncache_miss\nremote_storage_error\n"
    c = compile_cache.parse_stats_log(log)
    assert (c["cache_miss"], c["direct_cache_hit"], c["remote_storage_error"]) == (2, 1, 2)
    assert compile_cache.from_counters(c, "r").summary().startswith("ccache 1/3 hits; remote cache FAILED (2 error")


def test_print_stats_and_summary() -> None:
    counters = parse_print_stats("cache_miss\t2\ndirect_cache_hit\t5\npreprocessed_cache_hit\t1\n"
                                 "remote_storage_hit\t4\nremote_storage_error\t0\nstats_zeroed_timestamp\t0\n")
    cache = compile_cache.from_counters(counters, "redis://***@h:6379")
    assert (cache.calls, cache.hits, cache.misses, cache.remote_hits) == (8, 6, 2, 4)
    assert cache.summary() == "ccache 6/8 hits (4 remote)"
    failed = compile_cache.from_counters({**counters, "remote_storage_error": 3}, "redis://***@h:6379")
    assert failed.remote_failed
    assert failed.summary() == ("ccache 6/8 hits; remote cache FAILED (3 error(s), 0 timeout(s)): compiled "
                                "without it, slower")
    assert not compile_cache.from_counters({**counters, "remote_storage_error": 3}, "").remote_failed


def test_cache_settings() -> None:
    ok = parse({"cache": {"remote": "redis://10.0.0.1:6379", "password_secret": "ccache-redis"}}, Path("."))
    assert ok.cache == Cache("redis://10.0.0.1:6379", "ccache-redis")
    assert parse({}, Path(".")).cache.storage() is None  # off by default
    for bad, says in (({"remote": "redis://pw@10.0.0.1:6379"}, "holds credentials"),
                      ({"remote": "redis://:pw@10.0.0.1"}, "holds credentials"),
                      ({"remote": "https://cache.example.org/"}, "not a ccache Redis"),
                      ({"password_secret": "ccache-redis"}, "while cache.remote is empty"),
                      ({"remote": "redis://h", "password_secret": "../pw"}, "file name in master.secrets_dir")):
        with pytest.raises(SettingsError, match=says) as exc:
            parse({"cache": bad}, Path("."))
        assert "pw@" not in str(exc.value)  # the error never repeats the credentials


def test_example_settings_leave_the_cache_off() -> None:
    """The example's values are what a copied file runs with before it is edited: no secret it lacks."""
    s = load_settings(REPO_ROOT / "master" / "settings.example.toml")
    assert s.cache == Cache()


def test_result_round_trip() -> None:
    res = BuildResult("w.whl", True, "abi3", 1.0, {}, [], [], "py", "cc",
                      compile_cache=CompileCache(3, 2, 1, "redis://***@h:1", 2, 1, 0, 0))
    assert BuildResult.from_json(res.to_json()) == res


# --------------------------------------------------------------------------- real builds

needs_tools = pytest.mark.skipif(not available() or shutil.which("ccache") is None or host_arch() != "x86_64",
                                 reason="needs redis-server, ccache and an x86_64 host")


@pytest.fixture
def redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", free_port(0), password=secrets.token_urlsafe(18)).start()
    try:
        yield server
    finally:
        server.stop()


def _worker_build(fixture_repo: Path, where: Path, monkeypatch: pytest.MonkeyPatch, storage: str,
                  sub: str = "build", **env: str) -> tuple[BuildResult, str]:
    """One build as the worker whose ccache directory is ``where/ccache`` runs it, in a checkout of its own."""
    src = where / sub / "src"
    shutil.copytree(fixture_repo, src, symlinks=True)
    patch.patch_tree(src, VARIANT, "x86_64", "0.12.0")
    monkeypatch.setenv("CCACHE_DIR", str(where / "ccache"))
    monkeypatch.setenv("CCACHE_REMOTE_STORAGE", storage)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    log = io.StringIO()
    res = build.build(build.BuildOptions(VARIANT, src, where / sub / "out", log=log, fetch_mirror=MIRROR))
    assert Path(res.wheel).is_file()
    assert not list((where / sub / "out").glob(".ccache-stats-*"))  # the stats log goes with the build
    return res, log.getvalue()


def _local_files(ccache_dir: Path) -> int:
    r = subprocess.run(["ccache", "--print-stats"], capture_output=True, text=True, check=True,
                       env={"CCACHE_DIR": str(ccache_dir), "PATH": "/usr/bin:/bin"})
    return parse_print_stats(r.stdout).get("files_in_cache", 0)


@pytest.mark.slow
@needs_tools
def test_a_fresh_worker_builds_from_what_another_worker_built(fixture_repo: Path, tmp_path: Path, redis,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker A compiles; a worker-side CCACHE_REMOTE_ONLY must not keep its own directory empty.
    first, log_a = _worker_build(fixture_repo, tmp_path / "a", monkeypatch, redis.storage, CCACHE_REMOTE_ONLY="true")
    cc = first.compile_cache
    assert cc is not None and cc.misses > 0 and cc.remote_errors == 0, cc
    assert cc.remote == f"redis://***@127.0.0.1:{redis.port}"
    assert redis.keys() > 0
    assert _local_files(tmp_path / "a" / "ccache") > 0  # local + remote
    assert "CCACHE_REMOTE_ONLY" in log_a.split("env removed from the worker's environment:")[1].splitlines()[0]
    # Worker A again, another checkout: its own directory serves it; the counters are this build's only.
    again, _ = _worker_build(fixture_repo, tmp_path / "a", monkeypatch, redis.storage, sub="again")
    cc = again.compile_cache
    assert cc is not None and (cc.calls, cc.misses, cc.remote_hits) == (first.compile_cache.calls, 0, 0), cc
    # Worker B: empty ccache directory, another checkout path: everything from the remote.
    second, log_b = _worker_build(fixture_repo, tmp_path / "b", monkeypatch, redis.storage)
    cc = second.compile_cache
    assert cc is not None and cc.calls == first.compile_cache.calls, cc
    assert (cc.misses, cc.remote_hits, cc.remote_errors) == (0, cc.calls, 0), cc
    assert cc.summary() == f"ccache {cc.calls}/{cc.calls} hits ({cc.calls} remote)"
    assert f"compile cache: ccache, local + remote redis://***@127.0.0.1:{redis.port}" in log_b
    for text in (log_a, log_b, str(first.to_json()), str(second.to_json())):
        assert redis.password not in text


@pytest.mark.slow
@needs_tools
@pytest.mark.parametrize("trouble", ["down", "full"])
def test_a_cache_down_or_full_costs_time_not_the_build(fixture_repo: Path, tmp_path: Path, redis, trouble: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if trouble == "down":
        redis.kill()  # the cache host died
    else:
        redis.set_maxmemory("1")  # full: every write refused (OOM), whatever LRU evicts
    res, log = _worker_build(fixture_repo, tmp_path / "w", monkeypatch, redis.storage)
    cc = res.compile_cache
    assert cc is not None and cc.misses == cc.calls > 0 and cc.remote_failed, cc
    assert "remote cache FAILED" in cc.summary()
    assert f"WARNING: the remote compile cache redis://***@127.0.0.1:{redis.port} failed" in log
    assert redis.password not in log
    if trouble == "full":
        assert redis.keys() == 0


def test_the_master_warns_when_the_cache_secret_is_missing(tmp_path: Path) -> None:
    """A missing secret is no configuration error (builds go on without the remote), but the log says so."""
    from twisted.python import log

    from master.config import build_config

    (tmp_path / "secrets").mkdir(mode=0o700)
    s = parse({"master": {"secrets_dir": str(tmp_path / "secrets")},
               "cache": {"remote": "redis://127.0.0.1:6379", "password_secret": "ccache-redis"}}, tmp_path)
    seen: list[dict] = []
    log.addObserver(seen.append)
    try:
        build_config(s, tmp_path)
        (tmp_path / "secrets" / "ccache-redis").write_text("pw")
        (tmp_path / "secrets" / "ccache-redis").chmod(0o600)
        build_config(s, tmp_path)
    finally:
        log.removeObserver(seen.append)
    warned = [" ".join(map(str, e.get("message", ()))) for e in seen if "password_secret" in str(e.get("message"))]
    assert len(warned) == 1 and "without the shared compile cache" in warned[0], warned
