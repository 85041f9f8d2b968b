"""``master/README.md`` "Production", run as written: PostgreSQL, secrets, unit, restart, backup, restore.

Every block of the README marked ``<!-- production-test: NAME -->`` runs
verbatim in bash (``/srv/vllm-cpu``, ``/etc/systemd/system`` and
``/var/backups/vllm-cpu`` moved into a temporary directory).  What the README
says the test does instead of the install block, ``systemctl`` and
``provision.sh`` is done here: ``src`` and ``venv`` link to this checkout and
its venv; a PostgreSQL cluster of its own (Debian's ``postgresql``); the unit is
checked by ``systemd-analyze verify`` and its ``ExecStart`` started with its
``Environment=`` and ``WorkingDirectory=``; the worker is created and started
with ``buildbot-worker`` on 127.0.0.1.

Then, as a maintainer would: the admin logs in and forces a release of the
fixture upstream (one variant, x86_64: built, verified, uploaded to a real
pypiserver) and one of a release that does not compile; "Re-check now" leaves
the failed version to a maintainer (``recheck_attempts = 1``).  The master
restarts: builds, release results and the re-check's failure count are still
there.  The backup block runs, the restore blocks rebuild the master on a new
PostgreSQL cluster in a new home, and the restored master starts with the same
history and the worker reconnects.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from packaging.utils import parse_wheel_filename

from farm.names import RECHECK
from sandbox.http import Client
from testbed.fixture_upstream import MIRROR
from testbed.fixture_upstream.make_repo import add_release, make_fixture_repo
from tests.e2e.postgres import PostgresCluster
from tests.e2e.services import PyPIServer, adopt, free_port, make_wheel, stop_process, unit_service
from vllm_cpu_build.upload import list_index_files
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "master" / "README.md"
GOOD, BROKEN = "0.12.0", "0.12.1"
BROKEN_SOURCE = "csrc/cpu/isa_kernels.c"
VARIANT, WORKER = "vllm-cpu", "build-x86-1"
ADMIN = "alice"
UNIT = "vllm-cpu-master.service"


def readme_blocks() -> dict[str, str]:
    """The README's tested blocks: ``<!-- production-test: NAME -->`` followed by a ```sh fence."""
    found = re.findall(r"<!-- production-test: ([\w-]+) -->\n```sh\n(.*?)```", README.read_text(), re.S)
    return dict(found)


def edit_toml(path: Path, values: dict[tuple[str, str], str]) -> None:
    """The maintainer's edit: set existing ``key = ...`` lines of the given tables (TOML literals)."""
    table, out, done = "", [], set()
    for line in path.read_text().splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            table = m.group(1)
        k = re.match(r"^(\w+)\s*=", line)
        if k and (table, k.group(1)) in values:
            line = f"{k.group(1)} = {values[table, k.group(1)]}"
            done.add((table, k.group(1)))
        out.append(line)
    assert done == set(values), f"not in {path.name}: {set(values) - done}"  # the example lists every key
    path.write_text("\n".join(out) + "\n")


class Host:
    """One master host: its /srv/vllm-cpu, unit directory, and the running master."""

    def __init__(self, root: Path, pg: PostgresCluster, env: dict[str, str]) -> None:
        self.root = root
        self.home = root / "srv"
        self.units = root / "units"
        self.backups = root.parent / "backups"  # survives the host: the restore reads it
        self.pg = pg
        self.env = {**env, **pg.env}
        self.master: subprocess.Popen | None = None
        self.home.mkdir(parents=True)
        self.units.mkdir()
        # In place of the install block: the checkout and the venv running these tests.
        (self.home / "src").symlink_to(REPO)
        (self.home / "venv").symlink_to(Path(sys.executable).parent.parent)

    def run_block(self, name: str) -> str:
        script = readme_blocks()[name]
        for path, here in (("/srv/vllm-cpu", self.home), ("/etc/systemd/system", self.units),
                           ("/var/backups/vllm-cpu", self.backups)):
            script = script.replace(path, str(here))
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=self.env, cwd=self.root,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"README block {name!r} failed:\n{script}\n{out.stdout}{out.stderr}"
        return out.stdout + out.stderr

    @property
    def unit(self) -> Path:
        return self.units / UNIT

    def verify_unit(self) -> str:
        out = subprocess.run(["systemd-analyze", "verify", str(self.unit)], capture_output=True, text=True,
                             timeout=120)
        return f"rc={out.returncode} {out.stdout}{out.stderr}".strip()

    def start_master(self, sb: Client) -> None:
        """What systemd does for the unit (minus User=): ExecStart with its Environment in its directory."""
        argv, env, cwd = unit_service(self.unit.read_text())
        base = {"HOME": str(self.home), "LANG": "C.UTF-8"}  # systemd's own: a clean environment
        log = (self.root / "master.log").open("ab")
        self.master = subprocess.Popen(argv, env={**base, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.master.poll() is None, f"master exited: {self.twistd_log()[-3000:]}"
            try:
                if sb.session.get(sb.web_url + "api/v2/builders", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"master not up: {self.twistd_log()[-3000:]}")

    def stop_master(self) -> None:
        """``systemctl stop``: SIGTERM to the main process, then wait."""
        if self.master is not None and self.master.poll() is None:
            self.master.send_signal(signal.SIGTERM)
            try:
                self.master.wait(120)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait()
                raise
        self.master = None

    def twistd_log(self) -> str:
        log = self.home / "master" / "twistd.log"
        return log.read_text(errors="replace") if log.exists() else ""


def props(obj: dict) -> dict:
    return {k: v[0] for k, v in (obj.get("properties") or {}).items()}


def history(sb: Client) -> dict:
    """What must survive: every build (builder, number, result, version, uploaded) and the re-check summaries."""
    names = sb.builders()
    builds = sb.api("builds", property="*", order="buildid")
    return {
        "builds": [(names[b["builderid"]], b["number"], b["results"], props(b).get("version"),
                    props(b).get("uploaded")) for b in builds
                   if b["complete"] and not names[b["builderid"]].startswith("__")],  # not the nightly janitor
        "rechecks": [b["state_string"] for b in sb.api(f"builders/{sb.builder_id(RECHECK)}/builds", order="buildid")],
    }


def login(sb: Client, password: str) -> requests.Session:
    s = requests.Session()
    r = s.get(sb.web_url + "auth/login", auth=(ADMIN, password), timeout=30)
    assert r.status_code == 200, r.text[:300]
    return s


def wait_complete(sb: Client, path: str, after: int, timeout: float = 600) -> dict:
    """The first build under ``path`` with buildid > after, once complete."""
    def done():
        got = [b for b in sb.api(path, property="*", order="buildid") if b["buildid"] > after]
        return got[0] if got and got[0]["complete"] else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = done()
        if b:
            return b
        time.sleep(1)
    raise TimeoutError(f"no finished build in {path} after {timeout}s")


def recheck_now(sb: Client, session: requests.Session) -> dict:
    before = max([b["buildid"] for b in sb.api("builds")] or [0])
    r = sb.force("recheck-now", builder=RECHECK, session=session)
    assert r.status_code == 200 and "error" not in r.json(), r.text
    b = wait_complete(sb, f"builders/{sb.builder_id(RECHECK)}/builds", before, timeout=120)
    steps = sb.api(f"builds/{b['buildid']}/steps")
    return {**b, "summary": " / ".join(s["state_string"] for s in steps), "step_results": steps[-1]["results"],
            "log": sb.build_logs(b["buildid"]).get("recheck/recheck", "")}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresCluster):
    root: Path = tmp_path_factory.mktemp("production")
    upstream = make_fixture_repo(root / "upstream", ["v" + GOOD])
    src = upstream / BROKEN_SOURCE
    add_release(upstream, "v" + BROKEN,
                files={BROKEN_SOURCE: src.read_text() + "\n#error fixture release that does not compile\n"})
    index = PyPIServer(root / "index")
    # Every other variant × arch of both releases is in the index already (small stand-ins): the re-check
    # rebuilds whatever applicable build is missing, and this test builds one.
    planted = [make_wheel(root / "index", v.dist_name, version, f"cp38-abi3-manylinux_2_28_{arch}")
               for version in (GOOD, BROKEN) for v in load().for_release(version) for arch in v.arches
               if (v.package, arch) != (VARIANT, "x86_64")]
    # The REST client on free ports; the master is the README's.
    web_port, worker_port = free_port(), free_port()
    sb = Client(f"http://127.0.0.1:{web_port}/")
    admin_password = secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWINE_", "PG", "VLLM_CPU_BUILDBOT"))}
    env.update(INDEX_TOKEN=secrets.token_urlsafe(16), ALICE_PASSWORD=admin_password)
    host = Host(root / "host1", postgres, env)
    worker: subprocess.Popen | None = None
    restored: Host | None = None
    pg2: PostgresCluster | None = None
    data: dict = {"sb": sb, "host": host, "index": index, "outputs": {}}
    t0 = time.monotonic()
    try:
        host.run_block("settings")
        settings_file = host.home / "settings.toml"
        edit_toml(settings_file, {
            ("upstream", "url"): f'"{upstream}"',
            ("upstream", "poll_interval"): "2",
            ("upstream", "recheck_interval"): "0",
            ("upstream", "recheck_since"): f'"{GOOD}"',
            ("upstream", "recheck_attempts"): "1",
            ("index", "upload_url"): f'"{index.url}"',
            ("index", "simple_url"): f'"{index.simple_url}"',
            ("master", "web_url"): f'"{sb.web_url}"',
            ("master", "web_port"): str(web_port),
            ("master", "worker_port"): str(worker_port),
            ("master", "worker_interface"): '"127.0.0.1"',
            ("master", "db_url"): f'"postgresql+psycopg://buildbot@127.0.0.1:{postgres.port}/buildbot"',
            ("www", "admins"): f'["{ADMIN}"]',
            # The workers' own paths: the fixture's FetchContent mirror; they build on the host (the
            # build roots have tests of their own).
            ("build", "fetchcontent_mirror"): f'"{MIRROR}"',
            ("build", "root_x86_64"): '""',
            # Publishing beyond the index has e2e tests of its own (GitHub stand-in, OCI registry).
            ("github", "enabled"): "false",
            ("images", "enabled"): "false",
            ("notify", "mail"): "false",
            ("notify", "irc"): "false",
        })
        for name in ("secrets", "database", "master", "service"):
            data["outputs"][name] = host.run_block(name)
        data["verify"] = host.verify_unit()
        host.start_master(sb)
        t_up = time.monotonic()
        # Published by this farm before: adopted into its custody ledger (else foreign, and rebuilt).
        adopt(f"postgresql+psycopg://buildbot@127.0.0.1:{postgres.port}/buildbot", index.simple_url, *planted,
              env={"PGPASSWORD": (host.home / "secrets" / "db-password").read_text().strip()})

        # A build host, as provision.sh makes it (create-worker with the password `workers add` wrote).
        wdir = root / "worker"
        password = (host.home / "secrets" / f"worker-{WORKER}").read_text()
        bb_worker = str(Path(sys.executable).with_name("buildbot-worker"))
        subprocess.run([bb_worker, "create-worker", "-q", "--umask=0o22", str(wdir), f"127.0.0.1:{worker_port}",
                        WORKER, password], check=True, timeout=120)
        worker = subprocess.Popen([bb_worker, "start", "--nodaemon", str(wdir)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT, env={**env, "PATH": f"{Path(sys.executable).parent}:"
                                                                               f"{env.get('PATH', '')}"})
        sb.until(lambda: WORKER in sb.connected_workers(), 120, "the worker to connect")

        alice = login(sb, admin_password)
        rel = sb.builder_id("release")
        for version in (GOOD, BROKEN):
            before = max([b["buildid"] for b in sb.api("builds")] or [0])
            r = sb.force(session=alice, versions=version, variants=[VARIANT], arches=["x86_64"], reason="e2e")
            assert r.status_code == 200 and "error" not in r.json(), r.text
            data[version] = wait_complete(sb, f"builders/{rel}/builds", before, timeout=900)
        data["t_releases"] = time.monotonic() - t_up
        data["recheck_before"] = recheck_now(sb, alice)
        data["history_before"] = history(sb)

        # systemctl restart vllm-cpu-master
        host.stop_master()
        host.start_master(sb)
        sb.until(lambda: WORKER in sb.connected_workers(), 120, "the worker to reconnect")
        data["history_after_restart"] = history(sb)
        data["recheck_after_restart"] = recheck_now(sb, login(sb, admin_password))
        data["history_final"] = history(sb)

        # Backup, then the host is gone: restore into a new home on a new PostgreSQL cluster.
        host.run_block("backup")
        host.stop_master()
        pg2 = PostgresCluster().start()
        restored = Host(root / "host2", pg2, env)
        restored.run_block("restore-files")
        # The new host's PostgreSQL has another port here; in production both are localhost:5432.
        edit_toml(restored.home / "settings.toml",
                  {("master", "db_url"): f'"postgresql+psycopg://buildbot@127.0.0.1:{pg2.port}/buildbot"'})
        for name in ("database", "restore-database", "master", "service"):
            restored.run_block(name)
        restored.start_master(sb)
        sb.until(lambda: WORKER in sb.connected_workers(), 120, "the worker to reconnect to the restored master")
        data["history_restored"] = history(sb)
        data["restored"] = restored
        data["seconds"] = time.monotonic() - t0
        print(f"\nproduction e2e: {data['seconds']:.0f}s in all; master up -> two releases done "
              f"{data['t_releases']:.0f}s")
        yield data
    finally:
        if restored is not None:
            restored.stop_master()
        host.stop_master()
        if worker is not None:
            stop_process(worker, 30)
        if pg2 is not None:
            pg2.stop()
        index.stop()


def test_readme_blocks_are_all_run() -> None:
    assert set(readme_blocks()) == {"settings", "secrets", "database", "master", "service", "backup",
                                    "restore-files", "restore-database"}


def test_schema_is_in_postgresql_and_nothing_in_sqlite(production: dict, postgres: PostgresCluster) -> None:
    host: Host = production["host"]
    tables = postgres.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db="buildbot").split()
    assert {"builds", "buildrequests", "masters", "alembic_version"} <= set(tables)
    owner = postgres.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'builds'", db="buildbot").strip()
    assert owner == "buildbot"
    assert not list((host.home / "master").glob("*.sqlite"))  # create-master made no SQLite database
    assert "upgrade complete" in production["outputs"]["master"]
    assert "Config file is good!" in production["outputs"]["master"]


def test_unit_is_valid_and_runs_the_master(production: dict) -> None:
    host: Host = production["host"]
    assert production["verify"] == "rc=0", production["verify"]  # no error, and no warning either
    text = host.unit.read_text()
    argv, env, cwd = unit_service(text)
    assert argv == [str(host.home / "venv" / "bin" / "buildbot"), "start", "--nodaemon", str(host.home / "master")]
    assert env["VLLM_CPU_BUILDBOT_SETTINGS"] == str(host.home / "settings.toml")
    assert env["PATH"].startswith(str(host.home / "venv" / "bin") + ":")
    assert cwd == str(host.home / "master")
    for line in ("User=buildbot", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
                 "After=network-online.target postgresql.service", "WantedBy=multi-user.target"):
        assert line in text.splitlines()


def test_release_built_and_uploaded(production: dict) -> None:
    sb: Client = production["sb"]
    good = production[GOOD]
    assert good["results"] == 0, good["state_string"]
    builds, pending = sb.children(good["buildid"])
    assert pending == [] and len(builds) == 1
    assert props(builds[0])["uploaded"] and builds[0]["results"] in (0, 1)
    assert props(builds[0])["workername"] == WORKER
    files = [f.filename for f in list_index_files(production["index"].simple_url, VARIANT)
             if f.filename.endswith("_x86_64.whl")]
    assert [str(parse_wheel_filename(f)[1]) for f in files] == [GOOD], files
    broken = production[BROKEN]
    assert broken["results"] == 2, broken["state_string"]  # FAILURE: the C code does not compile


def test_history_survives_restart_in_postgresql(production: dict) -> None:
    before, after = production["history_before"], production["history_after_restart"]
    assert after == before
    names = [b[0] for b in before["builds"]]
    assert names.count("release") == 2 and RECHECK in names
    # The re-check count is read from the database: after the restart it still knows 0.12.1 failed once.
    for key in ("recheck_before", "recheck_after_restart"):
        b = production[key]
        assert b["step_results"] == 1, (b["summary"], b["log"])  # WARNINGS
        assert f"failed too often: {BROKEN}" in b["summary"]
        assert f"{BROKEN} (v{BROKEN}) {VARIANT} x86_64: not in the index; failed 1 times" in b["log"]


def test_restored_master_has_the_history(production: dict) -> None:
    assert production["history_restored"] == production["history_final"]
    restored: Host = production["restored"]
    assert restored.pg.psql("SELECT count(*) FROM builds", db="buildbot").strip() == str(
        len(production["history_final"]["builds"]))


def test_no_password_in_logs_settings_or_unit(production: dict) -> None:
    host: Host = production["host"]
    db_password = (host.home / "secrets" / "db-password").read_text().strip()
    texts = {"settings.toml": (host.home / "settings.toml").read_text(), "unit": host.unit.read_text(),
             "twistd.log": host.twistd_log(), **production["outputs"]}
    for where, text in texts.items():
        assert db_password not in text, where
    for secret in (host.home / "secrets").iterdir():
        assert secret.stat().st_mode & 0o077 == 0, secret
