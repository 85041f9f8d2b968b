"""``python -m workers add`` never writes into the checkout: it needs a settings file outside it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from farm.settings import ENV_VAR
from workers import registry

REPO = Path(__file__).resolve().parents[2]
CHECKOUT_REGISTRY = REPO / "workers" / "registry.toml"
ADD = ["add", "--name", "graviton-7", "--arch", "arm64", "--admin", "ops@example.org"]


def _workers(*args: str, settings: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if settings is not None:
        env[ENV_VAR] = str(settings)
    return subprocess.run([sys.executable, "-m", "workers", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def _checkout_state() -> tuple[str, bool]:
    secret = REPO / ".sandbox" / "secrets" / "worker-graviton-7"
    return hashlib.sha256(CHECKOUT_REGISTRY.read_bytes()).hexdigest(), secret.exists()


def test_add_without_settings_refuses_and_names_the_option_and_variable() -> None:
    before = _checkout_state()
    r = _workers(*ADD)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--settings FILE" in r.stderr and f"${ENV_VAR}" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert _checkout_state() == before


def test_add_refuses_a_registry_or_secrets_inside_the_checkout(tmp_path: Path) -> None:
    before = _checkout_state()
    # A settings file that leaves [master] workers_registry at its default: the checkout's sandbox list.
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[master]\nsecrets_dir = "{tmp_path / "secrets"}"\n')
    r = _workers(*ADD, settings=bare)
    assert r.returncode == 2 and "[master] workers_registry" in r.stderr and "inside the checkout" in r.stderr, r
    # Default secrets_dir: the checkout's .sandbox/secrets.
    nosecrets = tmp_path / "nosecrets.toml"
    nosecrets.write_text(f'[master]\nworkers_registry = "{tmp_path / "workers.toml"}"\n')
    r = _workers("--settings", str(nosecrets), *ADD)
    assert r.returncode == 2 and "[master] secrets_dir" in r.stderr, r
    assert _checkout_state() == before and not (tmp_path / "workers.toml").exists()


def test_add_with_settings_writes_where_they_say(tmp_path: Path) -> None:
    before = _checkout_state()
    cfg = tmp_path / "settings.toml"
    cfg.write_text('[master]\nworkers_registry = "workers.toml"\nsecrets_dir = "secrets"\n')  # relative to the file
    r = _workers(*ADD, settings=cfg)
    assert r.returncode == 0, r.stderr
    assert f"added graviton-7 (aarch64) to {tmp_path / 'workers.toml'}" in r.stdout
    assert [e.name for e in registry.load(tmp_path / "workers.toml")] == ["graviton-7"]
    assert (tmp_path / "secrets" / "worker-graviton-7").stat().st_mode & 0o777 == 0o600
    assert _checkout_state() == before
    # The same through --settings; a second add of the name is refused, naming it.
    r = _workers("--settings", str(cfg), *ADD)
    assert r.returncode == 2 and "worker graviton-7: already in" in r.stderr


def test_reading_needs_no_settings() -> None:
    r = _workers("list")
    assert r.returncode == 0 and "local-x86-1" in r.stdout, r.stderr


def test_help_documents_the_exit_codes() -> None:
    r = _workers("--help")
    assert r.returncode == 0
    for line in ("exit codes:", "  0  done", "  1  check:", "  2  bad input"):
        assert line in r.stdout
