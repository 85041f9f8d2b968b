"""Buildbot's multi-master mode: two masters, one PostgreSQL database, a crossbar WAMP router.

Real processes on 127.0.0.1: crossbar (its own venv, ``make crossbar``, made here if missing) with
``master/crossbar.json``, masters ``a`` and ``b`` with the same settings but
for ``[master] name`` and their ports, ``mq_router_url`` pointing both at the
router.  Master ``a`` starts alone and a release is forced through its REST
API; its release build (an in-process worker of ``a``) plans the build,
queues it and ends: no x86_64 worker is connected to any master ("waiting
for an x86_64 worker").  Then ``b`` starts and the only x86_64 worker
attaches to ``b``: the request ``a`` queued runs there (``b`` learns of
it through the router), and ``a`` shows its result.  Both masters' APIs
show the same builds.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from farm.settings import Index, Master, Settings, Upstream, to_toml
from sandbox.http import Client
from sandbox.procs import until
from testbed.fixture_upstream.make_repo import make_fixture_repo
from tests.e2e.postgres import PostgresCluster
from tests.e2e.services import PyPIServer, free_port, stop_process, unit_service, wait_http
from workers import registry

# The first run may also create the crossbar venv (pip, a few minutes) before the cluster starts.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
CROSSBAR = REPO / ".venv-crossbar" / "bin" / "crossbar"
BIN = Path(sys.executable).parent
VERSION, VARIANT, WORKER = "0.12.0", "vllm-cpu", "mm-x86-1"
DB = "multimaster"


def wait_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def crossbar_venv() -> None:
    """``.venv-crossbar`` as ``make crossbar`` makes it (once: later runs find its stamp)."""
    if not CROSSBAR.exists():
        out = subprocess.run(["make", "-C", str(REPO), "crossbar"], capture_output=True, text=True, timeout=900)
        assert out.returncode == 0 and CROSSBAR.exists(), f"make crossbar failed:\n{out.stdout}{out.stderr}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresCluster):
    crossbar_venv()
    root: Path = tmp_path_factory.mktemp("multimaster")
    procs: dict[str, subprocess.Popen] = {}
    index = PyPIServer(root / "index")
    try:
        # The database: a role with a password (a secret) owning its database.
        db_password = secrets.token_urlsafe(18)
        postgres.psql(f"CREATE ROLE {DB} LOGIN PASSWORD '{db_password}'")
        postgres.psql(f"CREATE DATABASE {DB} OWNER {DB}")
        secrets_dir = root / "secrets"
        registry.write_secret(secrets_dir, "db-password", db_password)
        registry.write_secret(secrets_dir, "index-token", "unused")
        reg = root / "workers.toml"
        registry.add(reg, secrets_dir, WORKER, "x86_64", "e2e", password=secrets.token_urlsafe(16))
        registry.add(reg, secrets_dir, "mm-arm-1", "aarch64", "e2e", notes="never started")

        # The router.
        cbdir = root / "crossbar"
        cbdir.mkdir()
        router_port = free_port()
        config = json.loads((REPO / "master" / "crossbar.json").read_text())
        config["workers"][0]["transports"][0]["endpoint"]["port"] = router_port
        (cbdir / "config.json").write_text(json.dumps(config))
        # Started as its unit says (python -m master.systemd --router-dir, as in the README).
        unit = subprocess.run([sys.executable, "-m", "master.systemd", "--router-dir", str(cbdir), "--crossbar",
                               str(CROSSBAR), "--user", "buildbot"], capture_output=True, text=True, check=True,
                              timeout=60).stdout
        argv, unit_env, cwd = unit_service(unit)
        procs["crossbar"] = subprocess.Popen(argv, env={"HOME": str(root), "LANG": "C.UTF-8", **unit_env}, cwd=cwd,
                                             stdout=(root / "crossbar.log").open("wb"), stderr=subprocess.STDOUT,
                                             start_new_session=True)
        wait_port(router_port, 180, procs["crossbar"])

        upstream = make_fixture_repo(root / "upstream", ["v" + VERSION])
        masters: dict[str, Client] = {}
        worker_ports: dict[str, int] = {}
        menv: dict[str, dict[str, str]] = {}
        basedir: dict[str, Path] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWINE_", "PG", "VLLM_CPU_BUILDBOT"))}
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        for name in ("a", "b"):
            web_port, worker_ports[name] = free_port(), free_port()
            client = masters[name] = Client(f"http://127.0.0.1:{web_port}/")
            settings = root / f"settings-{name}.toml"
            settings.write_text(to_toml(Settings(
                upstream=Upstream(url=str(upstream), poll_interval=2),
                index=Index(upload_url=index.url, simple_url=index.simple_url, token_secret="index-token"),
                master=Master(name=name, web_url=client.web_url, web_port=web_port, worker_port=worker_ports[name],
                              db_url=f"postgresql+psycopg://{DB}@127.0.0.1:{postgres.port}/{DB}",
                              db_password_secret="db-password", secrets_dir=secrets_dir, workers_registry=reg,
                              mq_router_url=f"ws://127.0.0.1:{router_port}/ws", local_workers=1))))
            menv[name] = {**env, "VLLM_CPU_BUILDBOT_SETTINGS": str(settings)}
            basedir[name] = root / f"master-{name}"
            subprocess.run([str(BIN / "buildbot"), "create-master", "-q", "-r", "--db", "sqlite://", "--config",
                            str(REPO / "master" / "master.cfg"), str(basedir[name])], check=True, env=menv[name],
                           timeout=120)
            if name == "a":  # one schema for both
                out = subprocess.run([str(BIN / "buildbot"), "upgrade-master", str(basedir[name])], env=menv[name],
                                     capture_output=True, text=True, timeout=300)
                assert out.returncode == 0, out.stdout + out.stderr

        def start(name: str) -> None:
            procs[name] = subprocess.Popen([str(BIN / "buildbot"), "start", "--nodaemon", str(basedir[name])],
                                           env=menv[name], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            wait_http(masters[name].web_url + "api/v2/builders", timeout=180, proc=procs[name])

        a, b = masters["a"], masters["b"]
        t0 = time.monotonic()
        start("a")
        r = a.force(versions=VERSION, variants=[VARIANT], arches=["x86_64"], dry_run=True, reason="multi-master")
        assert r.status_code == 200 and "error" not in r.json(), r.text
        until(lambda: a.release_builds() and a.children(a.release_builds()[0]["buildid"])[1], 300,
              "the release build on a to queue its variant build")
        release = a.release_builds()[0]
        start("b")
        wdir = root / "worker"
        subprocess.run([str(BIN / "buildbot-worker"), "create-worker", "-q", "--umask=0o22", str(wdir),
                        f"127.0.0.1:{worker_ports['b']}", WORKER, (secrets_dir / f"worker-{WORKER}").read_text()],
                       check=True, timeout=120)
        procs["worker"] = subprocess.Popen([str(BIN / "buildbot-worker"), "start", "--nodaemon", str(wdir)],
                                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        # a's release ended when it saw no x86_64 worker ("waiting for an x86_64 worker"); its request
        # stays queued, and b's worker builds it once the router told b about it.
        def built() -> bool:
            builds, pending = a.children(release["buildid"])
            return (a.api(f"builds/{release['buildid']}")[0]["complete"] and not pending and bool(builds)
                    and all(b["complete"] for b in builds))

        until(built, 600, "a's release build and its variant build on b to finish")
        seconds = time.monotonic() - t0
        print(f"\nmulti-master: force on a -> release done with b's worker: {seconds:.0f}s")
        yield {"a": a, "b": b, "release": release, "seconds": seconds, "basedir": basedir, "env": menv, "root": root}
    finally:
        for name in ("worker", "b", "a", "crossbar"):
            p = procs.get(name)
            if p is not None and p.poll() is None:
                if name == "crossbar":  # the router's controller stops its workers on SIGTERM
                    os.killpg(p.pid, signal.SIGTERM)
                stop_process(p, 60)
        index.stop()


def masterids(sb: Client) -> dict[str, int]:
    return {m["name"]: m["masterid"] for m in sb.api("masters")}


def test_release_forced_on_a_is_built_by_the_worker_on_b(cluster: dict) -> None:
    a = cluster["a"]
    rel = a.api(f"builds/{cluster['release']['buildid']}", property="*")[0]
    assert rel["results"] in (0, 1), rel["state_string"]
    builds, pending = a.children(rel["buildid"])
    assert pending == [] and len(builds) == 1
    variant = builds[0]
    assert variant["properties"]["workername"][0] == WORKER and variant["results"] in (0, 1)
    ids = masterids(a)
    basedir_a, basedir_b = str(cluster["basedir"]["a"]), str(cluster["basedir"]["b"])
    by_basedir = {name.split(":", 1)[1]: mid for name, mid in ids.items()}
    assert rel["masterid"] == by_basedir[basedir_a]  # planned and waited on a ...
    assert variant["masterid"] == by_basedir[basedir_b]  # ... built on b, whose completion reached a
    assert {m["active"] for m in a.api("masters")} == {True}


def test_both_masters_show_the_same_builds(cluster: dict) -> None:
    a, b = cluster["a"], cluster["b"]

    def seen(sb: Client) -> list[tuple]:
        return [(x["buildid"], x["builderid"], x["number"], x["results"], x["complete"]) for x in
                sb.api("builds", order="buildid")]

    assert seen(a) == seen(b) and len(seen(a)) >= 2
    # Each master's web UI serves it.
    for sb in (a, b):
        r = requests.get(sb.web_url, timeout=30)
        assert r.status_code == 200 and "buildbot" in r.text.lower()


def test_a_third_master_with_a_live_name_refuses(cluster: dict) -> None:
    """Master a's settings (``[master] name = "a"``) on a new basedir: it names the live a and exits 3,
    before it touches the shared database."""
    from master.singleton import EXIT_RUNNING

    a = cluster["a"]
    before = sorted((m["masterid"], m["active"]) for m in a.api("masters"))
    builds = [(x["buildid"], x["complete"]) for x in a.api("builds", order="buildid")]
    base = cluster["root"] / "master-a-again"
    env = cluster["env"]["a"]
    subprocess.run([str(BIN / "buildbot"), "create-master", "-q", "-r", "--db", "sqlite://", "--config",
                    str(REPO / "master" / "master.cfg"), str(base)], check=True, env=env, timeout=120)
    out = subprocess.run([str(BIN / "buildbot"), "start", "--nodaemon", str(base)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == EXIT_RUNNING, (out.returncode, out.stderr[-2000:])
    live_a = str(cluster["basedir"]["a"])
    assert "[master] name 'a' is in use by the live master" in out.stderr and live_a in out.stderr, out.stderr
    assert sorted((m["masterid"], m["active"]) for m in a.api("masters")) == before
    assert [(x["buildid"], x["complete"]) for x in a.api("builds", order="buildid")] == builds
