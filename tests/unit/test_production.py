"""Production pieces without a running master: the database settings and the systemd units.

The units are checked by systemd's own ``systemd-analyze verify`` (systemd
is installed but not PID 1 here): unknown keys, bad values and an
``ExecStart`` that is not executable all fail it, and a clean unit prints
nothing.  The whole recipe runs in ``tests/e2e/test_production_e2e.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farm import settings
from master.config import db_config
from master.systemd import main as systemd_main
from master.systemd import master_unit

REPO = Path(__file__).resolve().parents[2]
PROVISION = (REPO / "workers" / "provision.sh").read_text()
WORKER_UNIT_FN = re.search(r"^worker_unit\(\) \{\n.*?^\}\n", PROVISION, re.S | re.M).group(0)

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (make setup installs systemd)")


def verify(unit: Path) -> str:
    """``systemd-analyze verify``: "" for a unit without errors or warnings, else what it said."""
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    return f"rc={out.returncode} {out.stdout}{out.stderr}".strip() if out.returncode or out.stdout or out.stderr \
        else ""


@pytest.mark.parametrize("url", ["sqlite:///state.sqlite", "postgresql+psycopg://buildbot@localhost:5432/buildbot",
                                 "postgresql+psycopg:///buildbot"])
def test_db_url_accepted(url: str) -> None:
    s = settings.parse({"master": {"db_url": url, "db_password_secret": "db-password"}}, REPO)
    assert s.master.db_url == url


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://buildbot@localhost/buildbot", "'postgresql' is not supported; use .*postgresql\\+psycopg://"),
    ("postgresql+psycopg2://buildbot@localhost/buildbot", "'postgresql\\+psycopg2' is not supported"),
    ("mysql://buildbot@localhost/buildbot", "'mysql' is not supported"),
    ("postgresql+psycopg://buildbot:hunter2@localhost/buildbot", "holds a password; .*db_password_secret"),
    ("not a url", "not a database URL"),
])
def test_db_url_refused_naming_the_key(url: str, message: str) -> None:
    with pytest.raises(settings.SettingsError, match="master.db_url: " + message) as exc:
        settings.parse({"master": {"db_url": url}}, REPO)
    assert "hunter2" not in str(exc.value)


def test_db_password_is_a_secret_for_the_driver() -> None:
    from buildbot.process.properties import Secret

    plain = db_config(settings.Master(db_url="sqlite:///state.sqlite"))
    assert plain == {"db_url": "sqlite:///state.sqlite"}
    pg = settings.Master(db_url="postgresql+psycopg://buildbot@localhost/buildbot", db_password_secret="db-password")
    cfg = db_config(pg)
    assert cfg["db_url"] == pg.db_url  # never rewritten with the password: Buildbot logs the URL
    secret = cfg["engine_kwargs"]["connect_args"]["password"]
    assert isinstance(secret, Secret) and secret.secret_name == "db-password"
    with pytest.raises(settings.SettingsError, match="master.db_password_secret: a secret is a file name"):
        settings.parse({"master": {"db_password_secret": "../db-password"}}, REPO)


def test_settings_example_names_postgresql_and_its_secret() -> None:
    s = settings.load(REPO / "master" / "settings.example.toml")
    assert s.master.db_url.startswith("postgresql+psycopg://") and s.master.db_password_secret == "db-password"
    assert s.master.workers_registry == REPO / "master" / "workers.toml"  # relative to the settings file


@needs_systemd
def test_master_unit_verifies(tmp_path: Path) -> None:
    basedir = tmp_path / "srv vllm" / "master"  # a space: quoting must hold
    basedir.mkdir(parents=True)
    (basedir / "buildbot.tac").write_text("")
    cfg = tmp_path / "settings.toml"
    cfg.write_text("")
    unit = tmp_path / "vllm-cpu-master.service"
    unit.write_text(master_unit(cfg, basedir, "buildbot", Path(sys.executable).parent, ("postgresql.service",)))
    assert verify(unit) == ""
    # The check is real: a unit whose ExecStart does not exist fails it.
    unit.write_text(master_unit(cfg, basedir, "buildbot", tmp_path / "no-venv" / "bin"))
    assert "is not executable" in verify(unit)


def test_master_unit_cli_checks_its_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text("")
    with pytest.raises(SystemExit) as exc:
        systemd_main(["--settings", "settings.toml", "--basedir", str(tmp_path), "--user", "bb"])
    assert exc.value.code == 2 and "--settings: must be an absolute path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        systemd_main(["--settings", str(cfg), "--basedir", str(tmp_path), "--user", "bb"])
    assert exc.value.code == 2 and "has no buildbot.tac" in capsys.readouterr().err
    (tmp_path / "buildbot.tac").write_text("")
    assert systemd_main(["--settings", str(cfg), "--basedir", str(tmp_path), "--user", "bb"]) == 0
    text = capsys.readouterr().out
    assert f"ExecStart={Path(sys.executable).parent / 'buildbot'} start --nodaemon {tmp_path}\n" in text
    assert f"Environment=VLLM_CPU_BUILDBOT_SETTINGS={cfg}\n" in text


@needs_systemd
@pytest.mark.parametrize("compiler", ["", "CC=gcc-14 CXX=g++-14"])
def test_provision_worker_unit_verifies(tmp_path: Path, compiler: str) -> None:
    """provision.sh's unit, printed by its own function, for a worker in ``tmp_path``."""
    base = tmp_path / "vllm-cpu-worker"
    base.mkdir()
    (base / "venv").symlink_to(Path(sys.executable).parent.parent)  # has bin/buildbot-worker
    unit = tmp_path / "vllm-cpu-worker-graviton-1.service"
    r = subprocess.run(["sh", "-c", f"{WORKER_UNIT_FN}\nworker_unit > {unit}"], capture_output=True, text=True,
                       env={"WORKER_NAME": "graviton-1", "BASE": str(base), "COMPILER": compiler,
                            "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert verify(unit) == ""
    text = unit.read_text()
    assert f"ExecStart={base}/venv/bin/buildbot-worker start --nodaemon {base}/worker\n" in text
    assert "Restart=always\n" in text
    assert (f"Environment={compiler}\n" in text) is bool(compiler)


@needs_systemd
def test_router_unit_verifies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cbdir = tmp_path / "router"
    cbdir.mkdir()
    crossbar = Path(sys.executable)  # any executable: the unit is checked, not run, here
    with pytest.raises(SystemExit) as exc:
        systemd_main(["--router-dir", str(cbdir), "--crossbar", str(crossbar), "--user", "buildbot"])
    assert exc.value.code == 2 and "holding config.json" in capsys.readouterr().err
    shutil.copy(REPO / "master" / "crossbar.json", cbdir / "config.json")
    assert systemd_main(["--router-dir", str(cbdir), "--crossbar", str(crossbar), "--user", "buildbot"]) == 0
    unit = tmp_path / "vllm-cpu-router.service"
    unit.write_text(capsys.readouterr().out)
    assert verify(unit) == ""
    assert f"ExecStart={crossbar} start --cbdir {cbdir}\n" in unit.read_text()


def test_multi_master_settings() -> None:
    from master.config import build_config

    pg = "postgresql+psycopg://buildbot@localhost/buildbot"
    for raw, message in [
        ({"mq_router_url": "ws://127.0.0.1:8081/ws"}, "several masters need a shared database"),
        ({"db_url": pg, "mq_router_url": "http://127.0.0.1:8081/ws"}, "must be a ws:// or wss:// URL"),
        ({"db_url": pg, "mq_router_url": "ws://r/ws", "mq_realm": ""}, "master.mq_realm: empty"),
        ({"name": "Master A"}, "master.name: 'Master A' must be lowercase"),
    ]:
        with pytest.raises(settings.SettingsError, match=message):
            settings.parse({"master": raw}, REPO)
    single = build_config(settings.Settings(), "/nonexistent")
    assert "mq" not in single and not single.get("multiMaster")
    s = settings.parse({"master": {"db_url": pg, "mq_router_url": "ws://127.0.0.1:8081/ws", "name": "b"}}, REPO)
    cfg = build_config(s, "/nonexistent")
    assert cfg["multiMaster"] is True
    assert cfg["mq"] == {"type": "wamp", "router_url": "ws://127.0.0.1:8081/ws", "realm": "buildbot",
                         "wamp_debug_level": "error"}
    local = sorted(w.workername for w in cfg["workers"] if w.workername.startswith("b-local-"))
    assert local == [f"b-local-{i}" for i in range(1, 5)]
    release = next(b for b in cfg["builders"] if b.name == "release")
    assert set(release.workernames) == set(local)
