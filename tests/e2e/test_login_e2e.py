"""Production login on a real master: the [www] users file, admins, and the change hook.

A sandbox master (real processes on 127.0.0.1) with ``[www] users_file`` (a
0600 ``user:password`` file in the secrets directory, read by Buildbot's
``HTPasswdAuth``) and ``admins``.  Anonymous callers and non-admin users
may read but not force; an admin logs in through ``/auth/login`` (HTTP
basic, session cookie) and forces a dry-run release; the change hook asks
for the same credentials; no password reaches a log or the config page.
"""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from master.report import flatten
from master.www import check_users_file
from sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VERSION = "0.12.0"
ADMIN, USER = "alice", "carol"  # carol may log in, but is no admin


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("login")
    users = {ADMIN: secrets.token_urlsafe(12), USER: secrets.token_urlsafe(12)}
    sb = Sandbox(root / "sb", tags=["v" + VERSION], web_port=0, worker_port=0, index_port=0, poll_interval=1,
                 quiet=True, users=users, admins=(ADMIN,))
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()


def login(sb: Sandbox, user: str, password: str) -> requests.Session:
    """The web UI's login: GET /auth/login with HTTP basic auth; the session cookie is kept."""
    s = requests.Session()
    r = s.get(sb.web_url + "auth/login", auth=(user, password), timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert s.cookies, "no session cookie after login"
    return s


def whoami(sb: Sandbox, session: requests.Session) -> str:
    """The web UI's config page (``/config``): it names the logged-in user."""
    r = session.get(sb.web_url + "config", timeout=30)
    r.raise_for_status()
    return r.text


def hook(sb: Sandbox, auth: tuple[str, str] | None, branch: str) -> requests.Response:
    return requests.post(sb.web_url + "change_hook/base", auth=auth, timeout=30, data={
        "branch": branch, "revision": "", "repository": str(sb.upstream), "project": "vllm",
        "comments": "hook test", "author": "hook <hook@localhost>"})


def n_changes(sb: Sandbox) -> int:
    return len(sb.api("changes"))


def test_users_file_is_a_0600_secret(prod: Sandbox) -> None:
    assert stat.S_IMODE(prod.users_file.stat().st_mode) == 0o600
    assert check_users_file(prod.users_file, (ADMIN,)) == []


def test_anonymous_and_non_admin_cannot_force(prod: Sandbox) -> None:
    before = prod.buildrequests_total()
    params = {"versions": VERSION, "variants": ["vllm-cpu"], "arches": ["x86_64"], "dry_run": True}
    r = prod.force(**params)
    assert r.status_code in (401, 403), (r.status_code, r.text[:300])
    wrong = requests.Session()
    assert wrong.get(prod.web_url + "auth/login", auth=(ADMIN, "not-the-password"), timeout=30).status_code == 401
    assert prod.force(session=wrong, **params).status_code in (401, 403)
    carol = login(prod, USER, prod.users[USER])
    assert f'"username": "{USER}"' in whoami(prod, carol)
    r = prod.force(session=carol, **params)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert prod.buildrequests_total() == before
    # Reading stays public.
    assert requests.get(prod.web_url + "api/v2/builders", timeout=30).status_code == 200


def test_admin_logs_in_and_forces_a_dry_run(prod: Sandbox) -> None:
    alice = login(prod, ADMIN, prod.users[ADMIN])
    assert f'"username": "{ADMIN}"' in whoami(prod, alice)
    before = max([b["buildid"] for b in prod.release_builds()] or [0])
    r = prod.force(session=alice, versions=VERSION, variants=["vllm-cpu"], arches=["x86_64"], dry_run=True,
                   reason="login e2e")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    deadline = time.monotonic() + 120
    while True:
        rel = [b for b in prod.release_builds() if b["buildid"] > before and b["complete"]]
        if rel:
            break
        assert time.monotonic() < deadline, "the forced release did not finish"
        time.sleep(0.5)
    props = flatten(rel[0]["properties"])
    assert props["owner"] == ADMIN and props["dry_run"] is True, props
    builds, pending = prod.children(rel[0]["buildid"])
    assert pending == [] and len(builds) == 1
    assert builds[0]["results"] in (0, 1), builds[0]["state_string"]
    child = flatten(builds[0]["properties"])
    assert child["dry_run"] is True and not child.get("uploaded")


def test_change_hook_needs_the_same_credentials(prod: Sandbox) -> None:
    before = n_changes(prod)
    assert hook(prod, None, "refs/heads/main").status_code == 401
    assert hook(prod, (ADMIN, "wrong"), "refs/heads/main").status_code == 401
    assert n_changes(prod) == before
    # Any user of the file may announce (a branch no scheduler builds: nothing starts).
    r = hook(prod, (USER, prod.users[USER]), "refs/heads/main")
    assert r.status_code == 200, r.text
    assert n_changes(prod) == before + 1


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
    for password in prod.users.values():
        assert not [p for p in pages if password in p]
        assert not [text[:80] for text in logs if password in text]


@pytest.mark.parametrize(("content", "mode", "words"), [
    (f"{ADMIN}:s3cret\n", 0o644, "make it 0600"),
    (f"{ADMIN}:$apr1$abcdefgh$0123456789abcdefghij./\n", 0o600, "looks like an htpasswd hash"),
    ("bob:s3cret\n", 0o600, "alice not in"),
    (f"{ADMIN}\n", 0o600, "expected user:password"),
], ids=["world-readable", "htpasswd-hash", "admin-missing", "no-password"])
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
    env = {**prod._env(), "VLLM_CPU_BUILDBOT_SETTINGS": str(settings)}
    out = subprocess.run([str(Path(sys.executable).with_name("buildbot")), "checkconfig",
                          str(Path(__file__).resolve().parents[2] / "master" / "master.cfg")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and words in out.stdout + out.stderr, out.stdout + out.stderr
