"""Production login on a real master: the [www] users file (argon2 hashes), admins, the webhook.

The shared ``prod`` master (tests/e2e/conftest.py: real processes on
127.0.0.1) has ``[www] users_file`` (argon2id hashes written by
``master/users.py``, mode 0600, checked by a Twisted cred checker) and
``admins``.  Anonymous callers and non-admin users may read but not force;
an admin logs in through ``/auth/login`` (HTTP basic, session cookie) and is
let through to the force scheduler; tags come only signed; no password (nor
its hash) reaches a log or the config page.  The admin's forced release runs
in tests/e2e/test_trust_e2e.py (after attempts to poison it).
"""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from master import users as users_mod
from master.www import check_users_file
from sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VERSION = "0.12.0"
ADMIN, USER = "alice", "carol"  # as tests/e2e/conftest.py makes them: carol may log in, but is no admin


def login(sb: Sandbox, user: str, password: str) -> requests.Session:
    """The web UI's login: GET /auth/login with HTTP basic auth; the session cookie is kept."""
    s = requests.Session()
    r = s.get(sb.web_url + "auth/login", auth=(user, password), timeout=60)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert s.cookies, "no session cookie after login"
    return s


def whoami(sb: Sandbox, session: requests.Session) -> str:
    """The web UI's config page (``/config``): it names the logged-in user."""
    r = session.get(sb.web_url + "config", timeout=30)
    r.raise_for_status()
    return r.text


def n_changes(sb: Sandbox) -> int:
    return len(sb.api("changes"))


def test_users_file_holds_argon2_hashes_mode_0600(prod: Sandbox) -> None:
    assert stat.S_IMODE(prod.users_file.stat().st_mode) == 0o600
    assert check_users_file(prod.users_file, (ADMIN,)) == []
    text = prod.users_file.read_text()
    assert text.count(":$argon2id$") == 2
    for password in prod.users.values():
        assert password not in text


def test_anonymous_and_non_admin_cannot_force(prod: Sandbox) -> None:
    before = prod.buildrequests_total()
    params = {"versions": VERSION, "variants": ["vllm-cpu"], "arches": ["x86_64"], "dry_run": True}
    r = prod.force(**params)
    assert r.status_code in (401, 403), (r.status_code, r.text[:300])
    wrong = requests.Session()
    assert wrong.get(prod.web_url + "auth/login", auth=(ADMIN, "not-the-password"), timeout=60).status_code == 401
    assert wrong.get(prod.web_url + "auth/login", auth=("mallory", prod.users[ADMIN]), timeout=60).status_code == 401
    assert prod.force(session=wrong, **params).status_code in (401, 403)
    carol = login(prod, USER, prod.users[USER])
    assert f'"username": "{USER}"' in whoami(prod, carol)
    r = prod.force(session=carol, **params)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert prod.buildrequests_total() == before
    # Reading stays public.
    assert requests.get(prod.web_url + "api/v2/builders", timeout=30).status_code == 200


def test_admin_logs_in_and_reaches_the_force_checks(prod: Sandbox) -> None:
    alice = login(prod, ADMIN, prod.users[ADMIN])
    assert f'"username": "{ADMIN}"' in whoami(prod, alice)
    before = prod.buildrequests_total()
    # Past authz, the request itself is checked: a version the upstream lacks is a 400, not a 403.
    r = prod.force(session=alice, versions="0.99.0", variants=["vllm-cpu"], arches=["x86_64"], dry_run=True)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "not an upstream release" in r.json()["error"]["message"]["versions"]
    assert prod.buildrequests_total() == before


def test_a_user_added_by_the_cli_logs_in_without_a_reconfig(prod: Sandbox) -> None:
    password = secrets.token_urlsafe(12)
    out = subprocess.run([sys.executable, "-m", "master", "users", "--file", str(prod.users_file), "add", "dave",
                          "--password-stdin"], input=password + "\n", capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    try:
        assert out.returncode == 0, out.stderr
        assert password not in out.stdout + out.stderr
        assert stat.S_IMODE(prod.users_file.stat().st_mode) == 0o600
        dave = login(prod, "dave", password)
        assert '"username": "dave"' in whoami(prod, dave)
        assert prod.force(session=dave, versions=VERSION).status_code == 403  # not an admin
    finally:
        subprocess.run([sys.executable, "-m", "master", "users", "--file", str(prod.users_file), "remove", "dave"],
                       capture_output=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert requests.get(prod.web_url + "auth/login", auth=("dave", password), timeout=60).status_code == 401


def test_change_hook_takes_signed_tags_only(prod: Sandbox) -> None:
    before = n_changes(prod)
    # The old "base" dialect is gone, with or without credentials.
    for auth in (None, (ADMIN, prod.users[ADMIN])):
        r = requests.post(prod.web_url + "change_hook/base", auth=auth, timeout=30,
                          data={"branch": f"refs/tags/v{VERSION}", "repository": str(prod.upstream)})
        assert r.status_code == 400 and "'base', wasn't whitelisted" in r.text, r.text
    # A login is no signature.
    r = prod.session.post(prod.web_url + "change_hook/github", auth=(ADMIN, prod.users[ADMIN]), timeout=30,
                          json=prod.tag_push(f"v{VERSION}"), headers={"X-GitHub-Event": "push"})
    assert r.status_code == 400 and "X-Hub-Signature-256 missing" in r.text, r.text
    assert n_changes(prod) == before
    # Signed, a branch push is acknowledged and ignored.
    r = prod.webhook({**prod.tag_push("x"), "ref": "refs/heads/main"})
    assert r.status_code == 200 and "refs/heads/main is not a tag" in r.text, r.text
    assert n_changes(prod) == before


def test_passwords_never_shown_or_logged(prod: Sandbox) -> None:
    pages = [requests.get(prod.web_url + p, timeout=30).text
             for p in ("", "config", "api/v2/masters", "api/v2/forceschedulers", "api/v2/changes")]
    pages.append(whoami(prod, login(prod, ADMIN, prod.users[ADMIN])))
    logs = [p.read_text(errors="replace") for p in prod.root.rglob("*.log")]
    logs += [p.read_text(errors="replace") for p in (prod.root / "master").glob("twistd.log*")]
    for rel in prod.release_builds():
        logs.extend(prod.build_logs(rel["buildid"]).values())
        for child in prod.children(rel["buildid"])[0]:
            logs.extend(prod.build_logs(child["buildid"]).values())
    assert len(logs) > 3
    hashes = [line.split(":", 1)[1] for line in prod.users_file.read_text().splitlines()]
    for secret in [*prod.users.values(), *hashes, prod.webhook_secret]:
        assert not [p for p in pages if secret in p]
        assert not [text[:80] for text in logs if secret in text]


@pytest.mark.parametrize(("content", "mode", "words"), [
    (f"{ADMIN}:{users_mod.hash_password('s3cret')}\n", 0o644, "make it 0600"),
    (f"{ADMIN}:s3cret\n", 0o600, "plain-text passwords are refused"),
    (f"{ADMIN}:$apr1$abcdefgh$0123456789abcdefghij./\n", 0o600, "an htpasswd hash, not argon2; delete the line"),
    (f"bob:{users_mod.hash_password('s3cret')}\n", 0o600, "alice not in"),
    (f"{ADMIN}\n", 0o600, "expected NAME:ARGON2-HASH"),
], ids=["world-readable", "plain-text", "htpasswd-hash", "admin-missing", "no-password"])
def test_checkconfig_refuses_a_bad_users_file(prod: Sandbox, tmp_path: Path, content: str, mode: int,
                                              words: str) -> None:
    users = tmp_path / "users"
    users.write_text(content)
    users.chmod(mode)
    assert any(words in p for p in check_users_file(users, (ADMIN,)))
    # The real config load: the same settings as the running master, another users file.
    settings = tmp_path / "settings.toml"
    text = (prod.root / "settings.toml").read_text().replace(str(prod.users_file), str(users))
    settings.write_text(text)
    env = {**prod.env(), "VLLM_CPU_BUILDBOT_SETTINGS": str(settings)}
    out = subprocess.run([str(Path(sys.executable).with_name("buildbot")), "checkconfig",
                          str(Path(__file__).resolve().parents[2] / "master" / "master.cfg")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and words in out.stdout + out.stderr, out.stdout + out.stderr


def users_cli(sb: Sandbox, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "master", "users", "--file", str(sb.users_file), *args], input=stdin,
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    return out


def force_reply(sb: Sandbox, session: requests.Session) -> tuple[int, str]:
    """A force past authz is refused by its checks (400: no such version); a stale session gets 403."""
    r = sb.force(session=session, versions="0.99.0", variants=["vllm-cpu"], arches=["x86_64"], dry_run=True)
    return r.status_code, r.text


def test_sessions_end_on_logout_password_change_and_removal(prod: Sandbox) -> None:
    before = prod.buildrequests_total()
    alice = login(prod, ADMIN, prod.users[ADMIN])
    stolen = requests.Session()  # the same cookie in another client
    stolen.cookies.update(alice.cookies)
    assert force_reply(prod, stolen)[0] == 400
    assert alice.get(prod.web_url + "auth/logout", timeout=30).status_code == 200
    code, text = force_reply(prod, stolen)
    assert code == 403 and "your session has ended" in text, (code, text[:300])
    assert force_reply(prod, login(prod, ADMIN, prod.users[ADMIN]))[0] == 400  # a new login works
    # A password change and a removal (erin may log in, not force: "need to have role" until her session ends).
    first, second = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    users_cli(prod, "add", "erin", "--password-stdin", stdin=first + "\n")
    try:
        erin = login(prod, "erin", first)
        code, text = force_reply(prod, erin)
        assert code == 403 and "need to have role" in text, text[:300]
        users_cli(prod, "add", "erin", "--password-stdin", stdin=second + "\n")  # the password changes
        code, text = force_reply(prod, erin)
        assert code == 403 and "your session has ended" in text, text[:300]
        erin = login(prod, "erin", second)
        assert "need to have role" in force_reply(prod, erin)[1]
    finally:
        users_cli(prod, "remove", "erin")
    code, text = force_reply(prod, erin)
    assert code == 403 and "your session has ended" in text, text[:300]
    assert prod.buildrequests_total() == before
    state = prod.master_dir / "sessions.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 and prod.users[ADMIN] not in state.read_text()
