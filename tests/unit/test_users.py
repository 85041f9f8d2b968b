"""Web users (master/users.py, ``python -m master users``) and the web settings around them."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from buildbot.config.errors import capture_config_errors

from farm import settings
from master import users
from master.webhook import check_signature, signature
from master.www import OpenAuth, UsersFileAuth, make_www

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "master", "users", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def test_add_convert_remove_keep_a_0600_file_of_argon2_hashes(tmp_path: Path) -> None:
    f = tmp_path / "users"
    out = cli("--file", str(f), "add", "alice", "--password-stdin", stdin="correct horse\n")
    assert out.returncode == 0 and "alice" in out.stdout and "correct horse" not in out.stdout + out.stderr
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f.read_text().startswith("alice:$argon2id$") and "correct horse" not in f.read_text()
    assert users.verify(f, "alice", "correct horse") and not users.verify(f, "alice", "wrong")
    assert not users.verify(f, "mallory", "correct horse")
    # An old plain-text file: refused by add (and by the master), hashed in place by convert.
    with f.open("a") as fh:
        fh.write("bob:hunter2\n")
    out = cli("--file", str(f), "add", "carol", "--password-stdin", stdin="x\n")
    assert out.returncode == 2 and "users convert" in out.stderr
    assert "plain text" in cli("--file", str(f), "list").stdout
    out = cli("--file", str(f), "convert")
    assert out.returncode == 0 and "1 plain-text password(s) hashed" in out.stdout
    assert users.verify(f, "bob", "hunter2") and users.verify(f, "alice", "correct horse")
    assert users.check_file(f, ("alice",)) == []
    # An htpasswd hash hides the password: it cannot be converted, only replaced.
    with f.open("a") as fh:
        fh.write("dave:$apr1$abcdefgh$0123456789abcdefghij./\n")
    assert any("delete the line" in p for p in users.check_file(f, ("alice",)))
    out = cli("--file", str(f), "convert")
    assert out.returncode == 2 and "cannot be converted" in out.stderr
    f.write_text("".join(line + "\n" for line in f.read_text().splitlines() if not line.startswith("dave:")))
    assert cli("--file", str(f), "remove", "bob").returncode == 0
    assert cli("--file", str(f), "list").stdout.split() == ["alice"]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


@pytest.mark.parametrize(("args", "stdin", "code", "words"), [
    (("add", "bad name", "--password-stdin"), "x\n", 2, "name 'bad name'"),
    (("add", "alice", "--password-stdin"), "\n", 2, "empty password"),
    (("add", "alice", "--password-stdin"), "x\n", 2, "password too short: 1 characters, at least 12"),
    (("add", "alice", "--password-stdin"), "correct\rhorse battery\n", 2, "control character"),
    (("add", "alice", "--password-stdin"), "y" * 1025 + "\n", 2, "password too long"),
    (("remove", "nobody"), "", 2, "not in"),
], ids=["bad-name", "empty-password", "one-character", "carriage-return-inside", "too-long", "unknown-user"])
def test_cli_refuses_bad_input_naming_it(tmp_path: Path, args: tuple, stdin: str, code: int, words: str) -> None:
    out = cli("--file", str(tmp_path / "users"), *args, stdin=stdin)
    assert out.returncode == code and words in out.stderr, out.stderr


def test_a_crlf_line_ending_is_not_part_of_the_password(tmp_path: Path) -> None:
    f = tmp_path / "users"
    out = cli("--file", str(f), "add", "alice", "--password-stdin", stdin="correct horse battery\r\n")
    assert out.returncode == 0, out.stderr
    assert users.verify(f, "alice", "correct horse battery")
    assert not users.verify(f, "alice", "correct horse battery\r")


def test_cli_help_and_missing_file_setting(tmp_path: Path) -> None:
    out = cli("--help")
    assert out.returncode == 0 and "exit codes: 0 done" in out.stdout and "add" in out.stdout
    s = tmp_path / "s.toml"
    s.write_text("[www]\n")
    out = subprocess.run([sys.executable, "-m", "master", "users", "list"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={"PATH": "/usr/bin:/bin", settings.ENV_VAR: str(s)})
    assert out.returncode == 2 and "[www] users_file is not set" in out.stderr


def test_www_config_open_only_on_loopback_and_with_limits(tmp_path: Path) -> None:
    open_www = make_www(settings.Settings())
    assert isinstance(open_www["auth"], OpenAuth) and open_www["change_hook_dialects"] == {}
    assert open_www["auth"].getConfigDict() == {"name": "NoAuth"}
    exposed = settings.Settings(master=settings.replace(settings.Master(), web_interface="0.0.0.0"))
    with capture_config_errors() as errors:
        make_www(exposed)
    assert "without www.users_file" in str(errors.errors)
    f = tmp_path / "users"
    users.write(f, {"alice": users.hash_password("pw")})
    (tmp_path / "s.toml").write_text('[upstream]\nwebhook_secret = "hook"\n'
                                     '[www]\nusers_file = "users"\nadmins = ["alice"]\nmax_request_bytes = 2048\n')
    prod = make_www(settings.load(tmp_path / "s.toml"))
    assert isinstance(prod["auth"], UsersFileAuth) and prod["auth"].max_request_bytes == 2048
    assert prod["change_hook_dialects"]["github"]["max_bytes"] == 2048
    for bad, words in (("[www]\nmax_request_bytes = 10\n", "at least 1024"),
                       ("[www]\nmax_builds_per_request = 0\n", "at least 1"),
                       ('[upstream]\nwebhook_secret = "../hook"\n', "a secret is a file name")):
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(settings.SettingsError, match=words):
            settings.load(tmp_path / "bad.toml")


def test_webhook_signature_is_hmac_sha256_of_the_body() -> None:
    # GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature(b"It's a Secret to Everybody", b"Hello, World!") == expected
    check_signature(b"It's a Secret to Everybody", b"Hello, World!", expected.encode())
    for header in (None, b"", expected.replace("7", "8").encode(), b"sha1=" + expected[7:].encode()):
        with pytest.raises(ValueError, match="X-Hub-Signature-256"):
            check_signature(b"It's a Secret to Everybody", b"Hello, World!", header)
