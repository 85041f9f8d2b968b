"""Release announcements: one mail and one IRC line per release, plus variant build problems.

Buildbot's own reporters do the delivery: ``MailNotifier`` with
``BuildStatusGenerator`` + a message formatter, and the ``IRC`` words bot.
What this module adds is the *content* a release engineer needs: the
release version, each variant × arch result with its wheel, verify/ISA
summary, smoke status (skipped = a warning: the wheel was never run),
where it was uploaded, and links to the build pages.

The text comes from pure functions over data-API build dicts
(``format_release``, ``format_variant``, ``release_irc_line``,
``variant_irc_line``) so it is tested without a master; the glue fetches
a release's child builds through ``master.data``.  Passwords are
``util.Secret`` renderables: Buildbot renders them when the service starts
and they never reach a log, a property or a message.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any, ClassVar

from buildbot.plugins import reporters, util
from buildbot.reporters import utils as rutils
from buildbot.reporters.generators.build import BuildStatusGenerator
from buildbot.reporters.irc import IRCChannel, IrcStatusBot
from buildbot.reporters.message import MessageFormatterBase
from twisted.internet import defer
from twisted.python import log

from farm.custody import FOREIGN_PROPERTY, from_property, mail_lines
from farm.logscan import log_excerpt
from farm.names import RELEASE, builder_name
from farm.report import child_row, fetch_children, finished_release, flatten, format_table, result_name
from farm.settings import Settings
from farm.states import BAD, OK, Result, label
from vllm_cpu_build.variants import Catalog

RELEASE_KIND, VARIANT_KIND = "release", "variant"
Build = dict[str, Any]  # a data-API build dict (properties, steps, ...), or ``report.children``'s child

# --------------------------------------------------------------------------- pure text


def wants(events: Iterable[str], kind: str | None, results: int | None) -> bool:
    """Whether ``events`` (settings' mail_events / irc_events) ask for this finished build."""
    result = Result.of(results)
    if result is Result.RETRY:  # interrupted (a master restart, a lost worker): it runs again and is announced then
        return False
    ev = set(events)
    if kind == RELEASE_KIND:
        return "release_finished" in ev or ("release_failed" in ev and result in BAD)
    if kind == VARIANT_KIND:
        return ("variant_failed" in ev and result in BAD) or ("variant_warnings" in ev and result is Result.WARNINGS)
    return False


def _release_name(props: dict[str, Any]) -> str:
    return f"vLLM {props.get('version', '?')}{props.get('postfix') or ''}"


def _mode(props: dict[str, Any]) -> str:
    if props.get("dry_run"):
        return "dry run"
    if props.get("skip_upload"):
        return "no upload"
    return ""


def _attention(rows: list[dict[str, Any]]) -> list[str]:
    """What a release engineer must look at: failures first, builds waiting for a worker, skipped smoke tests."""
    out = []
    for r in rows:
        where = f"{r['variant']} {r['arch']}"
        if r["build_result"] not in OK and not r["waiting"]:
            out.append(f"{where}: {r['result'].upper()}" + (f": {r['state']}" if r["state"] else ""))
    for r in rows:
        if r["waiting"]:
            out.append(f"{r['variant']} {r['arch']}: {r['state']}: still queued; it builds when such a worker "
                       "connects and is announced on its own")
    for r in rows:
        if "skipped" in r["smoke"]:
            out.append(f"{r['variant']} {r['arch']}: smoke test skipped (this worker's CPU lacks the ISA): "
                       "the wheel passed verify but was never run")
    return out


def _failed_steps(build: Build) -> list[str]:
    return [f"{s['name']}: {s.get('state_string', '')}" for s in build.get("steps") or []
            if s.get("results") in BAD]


def format_release(release: Build, children: list[Build], build_url: str, title: str,
                   upload_url: str) -> tuple[str, str] | None:
    """(subject, body) of the mail for a finished release build; None when there is nothing to say.

    ``release``: data-API build dict (properties, optionally steps); ``children``:
    the variant builds it triggered, each a build dict plus ``builder`` and ``url``
    (a request still waiting has ``complete`` False).
    """
    props = flatten(release.get("properties"))
    results = release.get("results")
    rows = [child_row(c) for c in sorted(children, key=lambda c: (flatten(c.get("properties")).get("variant", ""),
                                                                  flatten(c.get("properties")).get("arch", "")))]
    foreign = from_property(props.get(FOREIGN_PROPERTY))
    if not rows and results in OK and not foreign:
        return None  # everything was already published: not a release, no mail
    ok = sum(1 for r in rows if r["build_result"] in OK)
    skipped = [f"{r['variant']} {r['arch']}" for r in rows if "skipped" in r["smoke"]]
    mode = _mode(props)
    name = _release_name(props)
    status = label(results).upper()
    subject = f"[{title}] {name}{f' ({mode})' if mode else ''}: {status}"
    if rows:
        subject += f", {ok}/{len(rows)} variant builds ok"
    else:
        failed = [s["name"] for s in release.get("steps") or [] if s.get("results") in BAD]
        subject += " before any variant build" + (f" (at {failed[0]})" if failed else "")
    waiting = [r for r in rows if r["waiting"]]
    if waiting:
        subject += f", {len(waiting)} waiting for a worker"
    if skipped:
        subject += f", smoke skipped on {len(skipped)}"
    subject += f", {len(foreign)} FOREIGN file(s) on the index" if foreign else ""
    lines = [
        f"{name} release {status}" + (f" ({mode})" if mode else ""),
        f"Tag: {props.get('tag', '?')}    release build: {build_url}",
    ]
    if props.get("dry_run"):
        lines.append("Upload: none (dry run: built, verified and smoke-tested only)")
    elif props.get("skip_upload"):
        lines.append("Upload: skipped on request")
    else:
        lines.append(f"Upload: {upload_url}")
    if props.get("reason"):
        lines.append(f"Reason: {props['reason']}")
    lines += ["", *mail_lines(props.get(FOREIGN_PROPERTY))]
    if rows:
        lines.append(format_table(rows, ("variant", "arch", "result", "verify", "smoke", "uploaded")).rstrip())
        lines.append("")
        attention = _attention(rows)
        if attention:
            lines.append("Needs attention:")
            lines += [f"  - {a}" for a in attention]
            lines.append("")
        lines.append("Per variant build:")
        for r in rows:
            lines.append(f"  {r['variant']} {r['arch']}: {r['result']}")
            if r["url"]:
                lines.append(f"    build:   {r['url']}")
            lines.append(f"    wheel:   {r['wheel']}")
            lines += [f"    verify:  {v}" for v in r["verify_detail"]] or ["    verify:  -"]
            lines += [f"    smoke:   {s}" for s in r["smoke_detail"]] or ["    smoke:   -"]
            lines += [f"    upload:  {u}" for u in r["uploaded_urls"]] or [f"    upload:  {r['uploaded']}"]
    else:
        lines.append("No variant build was started.")
        lines += [f"  failed step {s}" for s in _failed_steps(release)]
        if release.get("state_string"):
            lines.append(f"  build state: {release['state_string']}")
    return subject, "\n".join(lines) + "\n"


def format_variant(build: Build, builder: str, build_url: str, title: str,
                   release_url: str | None, failed_log: tuple[str, str] | None = None,
                   after_release: bool = False) -> tuple[str, str]:
    """(subject, body) of the mail for one variant × arch build that failed or had warnings.

    ``failed_log`` is (log name, text) of the first failed step: its
    compiler errors and last lines go in the mail, which then tells what
    broke without a click.  ``after_release``: the build finished after its
    release was reported (it waited for a worker), so this mail is its only
    announcement, whatever its result.
    """
    props = flatten(build.get("properties"))
    row = child_row({**build, "url": build_url})
    status = result_name(build).upper()
    subject = (f"[{title}] {props.get('variant', builder)} {props.get('arch', '')} {status} "
               f"for {_release_name(props)}" + (" (after its release)" if after_release else ""))
    state = build.get("state_string") or ""
    lines = [
        f"{subject[len(title) + 3:]}" + (f" ({_mode(props)})" if _mode(props) else ""),
        f"Builder: {builder}    build: {build_url}",
    ]
    if release_url:
        lines.append(f"Release build: {release_url}"
                     + (" (finished earlier, reporting this build as waiting for a worker)" if after_release else ""))
    if state:
        lines.append(f"State: {state}")
    lines.append("")
    steps = _failed_steps(build)
    if steps:
        lines.append("Failed steps:")
        lines += [f"  - {s}" for s in steps]
    if failed_log:
        errors, tail = log_excerpt(failed_log[1])
        if errors:
            lines += ["", f"Errors in {failed_log[0]}:"] + [f"  | {line[:300]}" for line in errors]
        if tail:
            lines += ["", f"Last lines of {failed_log[0]}:"] + [f"  | {line[:300]}" for line in tail]
    warn = [f"{s['name']}: {s.get('state_string', '')}" for s in build.get("steps") or []
            if s.get("results") == Result.WARNINGS]
    if warn:
        lines.append("Warnings:")
        lines += [f"  - {s}" for s in warn]
    lines += ["", f"wheel:   {row['wheel']}"]
    lines += [f"verify:  {v}" for v in row["verify_detail"]] or ["verify:  -"]
    lines += [f"smoke:   {s}" for s in row["smoke_detail"]] or ["smoke:   -"]
    lines.append(f"upload:  {', '.join(row['uploaded_urls']) or row['uploaded']}")
    return subject, "\n".join(lines) + "\n"


def release_irc_line(release: Build, children: list[Build], build_url: str) -> str | None:
    """One IRC line for a finished release; None when it had nothing to build and succeeded."""
    props = flatten(release.get("properties"))
    results = release.get("results")
    rows = [child_row(c) for c in children]
    if not rows and results in OK:
        return None
    ok = sum(1 for r in rows if r["build_result"] in OK)
    mode = _mode(props)
    text = (f"{_release_name(props)} release {label(results) if results is not None else 'unfinished'}"
            f"{f' ({mode})' if mode else ''}: ")
    text += f"{ok}/{len(rows)} variant builds ok" if rows else "before any variant build"
    bad = sorted(f"{r['variant']} {r['arch']}" for r in rows
                 if r["build_result"] not in OK and not r["waiting"])
    waiting = sorted(f"{r['variant']} {r['arch']}" + (f" since {r['since']}" if r["since"] else "")
                     for r in rows if r["waiting"])
    skipped = sorted(f"{r['variant']}" for r in rows if "skipped" in r["smoke"])
    if bad:
        text += "; FAILED: " + ", ".join(bad)
    if waiting:
        text += "; waiting for a worker: " + ", ".join(waiting)
    if skipped:
        text += "; smoke skipped: " + ", ".join(skipped)
    if not rows:
        text += "".join(f"; {s}" for s in _failed_steps(release)[:1]) or f"; {release.get('state_string', '')}"
    return f"{text} - {build_url}"


def variant_irc_line(build: Build, builder: str, build_url: str, after_release: bool = False) -> str:
    props = flatten(build.get("properties"))
    state = build.get("state_string") or ""
    return (f"{props.get('variant', builder)} {props.get('arch', '')} {result_name(build)} for "
            f"{_release_name(props)}{' (after its release)' if after_release else ''}"
            f"{': ' + state if state else ''} - {build_url}")


# --------------------------------------------------------------------------- master glue


LOG_SCAN_LINES = 5000  # the end of a compile log: where its errors are


@defer.inlineCallbacks
def fetch_failure_log(master: Any, build: Build) -> Generator[Any, Any, tuple[str, str] | None]:
    """(``step/log`` name, text of its last LOG_SCAN_LINES lines) of the first failed step, or None.

    Reads the stored log (Buildbot has already replaced secrets in it)
    through the database: a compile log is many MB, a mail wants its end.
    """
    for step in build.get("steps") or []:
        if step.get("results") not in BAD:
            continue
        logs = yield master.data.get(("steps", step["stepid"], "logs"))
        logs = [lg for lg in logs or [] if lg["type"] in ("s", "t") and lg["num_lines"]]
        if not logs:
            return None
        chosen = next((lg for lg in logs if lg["name"] == "stdio"), logs[0])
        n = chosen["num_lines"]
        text = yield defer.ensureDeferred(
            master.db.logs.getLogLines(chosen["logid"], max(0, n - LOG_SCAN_LINES), n - 1))
        if chosen["type"] == "s":  # stdio lines carry a stream prefix (o/e/h)
            text = "\n".join(line[1:] for line in text.split("\n"))
        return f"{step['name']}/{chosen['name']}", text
    return None


class ReleaseFormatter(MessageFormatterBase):
    """Mail text for the release builder (kind "release") or a variant builder (kind "variant").

    A variant build is mailed when ``events`` want its result, or when it
    finished after its release (``finished_release``) and ``events`` want
    releases: its mail is then the rest of the release's announcement.
    """

    compare_attrs: ClassVar[list[str]] = ["kind", "upload_url", "events"]

    def __init__(self, kind: str, upload_url: str, events: Iterable[str] = ()) -> None:
        super().__init__(want_properties=True, want_steps=True)
        self.kind = kind
        self.upload_url = upload_url
        self.events = tuple(events)

    @defer.inlineCallbacks
    def format_message_for_build(self, master: Any, build: Build, **kwargs: Any) -> Generator[Any, Any, Build]:
        url = rutils.getURLForBuild(master, build["builder"]["builderid"], build["number"])
        title = master.config.title
        if self.kind == RELEASE_KIND:
            children = yield fetch_children(master, build["buildid"])
            msg = format_release(build, children, url, title, self.upload_url)
        else:
            parent = build.get("parentbuild")
            release_url = (rutils.getURLForBuild(master, parent["builderid"], parent["number"])
                           if parent else None)
            after = bool("release_finished" in self.events and (yield finished_release(master, build)))
            if after or wants(self.events, VARIANT_KIND, build["results"]):
                failed_log = yield fetch_failure_log(master, build)
                msg = format_variant(build, build["builder"]["name"], url, title, release_url, failed_log, after)
            else:
                msg = None
        subject, body = msg if msg else (None, None)
        return {"body": body, "subject": subject, "type": "plain", "extra_info": None}

    def format_message_for_buildset(self, master: Any, buildset: Build, builds: list[Build], **kwargs: Any) -> Any:
        raise NotImplementedError("release mails are per build")


class QuietBuildStatusGenerator(BuildStatusGenerator):
    """BuildStatusGenerator that sends nothing when the formatter had nothing to say."""

    @defer.inlineCallbacks
    def generate(self, master: Any, reporter: Any, key: Any, build: Build) -> Generator[Any, Any, Any]:
        report = yield super().generate(master, reporter, key, build)
        if report is None or report.get("body") is None:
            return None
        return report


def _modes(events: Iterable[str], kind: str) -> tuple[str, ...]:
    ev = set(events)
    if kind == RELEASE_KIND:
        if "release_finished" in ev:
            return ("failing", "passing", "warnings", "exception", "cancelled")
        return ("failing", "exception", "cancelled") if "release_failed" in ev else ()
    if "release_finished" in ev:  # a build finishing after its release is announced whatever its result
        return ("failing", "passing", "warnings", "exception", "cancelled")
    modes: tuple[str, ...] = ()
    if "variant_failed" in ev:
        modes += ("failing", "exception", "cancelled")
    if "variant_warnings" in ev:
        modes += ("warnings",)
    return modes


def mail_generators(settings: Settings, variant_builders: list[str]) -> list[BuildStatusGenerator]:
    out = []
    if modes := _modes(settings.notify.mail_events, RELEASE_KIND):
        out.append(QuietBuildStatusGenerator(
            builders=[RELEASE], mode=modes,
            message_formatter=ReleaseFormatter(RELEASE_KIND, settings.index.upload_url)))
    if (modes := _modes(settings.notify.mail_events, VARIANT_KIND)) and variant_builders:
        out.append(QuietBuildStatusGenerator(
            builders=list(variant_builders), mode=modes,
            message_formatter=ReleaseFormatter(VARIANT_KIND, settings.index.upload_url,
                                               settings.notify.mail_events)))
    return out


class ReleaseIrcChannel(IRCChannel):
    """A channel that announces releases in one line (and variant problems), per the settings' events."""

    @defer.inlineCallbacks
    def buildFinished(self, build: Build, watched: bool = False) -> Generator[Any, Any, None]:
        svc = self.bot.parent  # the ReleaseIRC service: events and builder kinds
        builder = yield self.bot.getBuilder(builderid=build["builderid"])
        name = builder["name"]
        kind = svc.kind_of(name)
        after = False
        if kind == VARIANT_KIND and "release_finished" in svc.release_events:
            after = bool((yield finished_release(self.master, build)))
        if not watched and not after and not wants(svc.release_events, kind, build["results"]):
            return
        if not (watched or (yield self.notify_for_finished(build))):
            return  # the channel switched this event off ("notify off ...")
        if not self.shouldReportBuild(name, build["number"]):
            return
        url = rutils.getURLForBuild(self.master, build["builderid"], build["number"])
        full = dict(build)
        full["properties"] = yield self.master.data.get(("builds", build["buildid"], "properties"))
        full["steps"] = yield self.master.data.get(("builds", build["buildid"], "steps"))
        if kind == RELEASE_KIND:
            children = yield fetch_children(self.master, build["buildid"])
            line = release_irc_line(full, children, url)
        else:
            line = variant_irc_line(full, name, url, after)
        if line:
            self.send(line)


class ReleaseIrcBot(IrcStatusBot):
    channelClass = ReleaseIrcChannel


class ReleaseIRC(reporters.IRC):
    """Buildbot's IRC bot whose channels announce releases in one line each."""

    def checkConfig(self, *args: Any, release_events: Iterable[str] = (), release_builder: str = RELEASE,
                    variant_builders: Iterable[str] = (), **kwargs: Any) -> None:
        super().checkConfig(*args, **kwargs)

    def reconfigService(self, *args: Any, release_events: Iterable[str] = (), release_builder: str = RELEASE,
                        variant_builders: Iterable[str] = (), **kwargs: Any) -> Any:
        self.release_events = tuple(release_events)
        self.release_builder = release_builder
        self.variant_builders = frozenset(variant_builders)
        result = super().reconfigService(*args, **kwargs)
        self.f.protocol = ReleaseIrcBot  # the factory super() just made builds our bot
        return result

    def kind_of(self, builder: str) -> str | None:
        if builder == self.release_builder:
            return RELEASE_KIND
        return VARIANT_KIND if builder in self.variant_builders else None


def _irc_notify_events(events: Iterable[str]) -> list[str]:
    """Buildbot channel events that cover ours (the channel then filters per builder kind)."""
    ev = set(events)
    out = set()
    if "release_finished" in ev:
        out.add("finished")
    if ev & {"release_failed", "variant_failed"}:
        out |= {"failure", "exception", "cancelled"}
    if "variant_warnings" in ev:
        out.add("warnings")
    return sorted(out)


def missing_secrets(settings: Settings) -> list[str]:
    """Notification secrets the settings name that the secrets directory lacks (when it exists)."""
    names = [("smtp_password_secret", settings.notify.smtp_password_secret, settings.notify.mail),
             ("irc_password_secret", settings.notify.irc_password_secret, settings.notify.irc)]
    if not settings.master.secrets_dir.is_dir():
        return []  # reported once by config.py
    return [f"notify.{key}: secret {name!r} not found in {settings.master.secrets_dir}"
            for key, name, on in names if on and name and not (settings.master.secrets_dir / name).is_file()]


def _secret(name: str) -> util.Secret | None:
    return util.Secret(name) if name else None


def make_reporters(settings: Settings, catalog: Catalog | None = None) -> list[Any]:
    """The ``services`` of the master: MailNotifier and/or IRC, as the settings' [notify] asks."""
    if catalog is None:
        from vllm_cpu_build.variants import load

        catalog = load()
    variant_builders = [builder_name(v.package, a) for v, a in catalog.builds()]
    for problem in missing_secrets(settings):
        # Like the workers' passwords: checkconfig passes; Buildbot fails to render it at start.
        log.msg(f"vllm-cpu: WARNING {problem}; create it (mode 0600) before starting the master")
    out: list[Any] = []
    if settings.notify.mail:
        generators = mail_generators(settings, variant_builders)
        out.append(reporters.MailNotifier(
            fromaddr=settings.notify.mail_from, relayhost=settings.notify.smtp_host, smtpPort=settings.notify.smtp_port,
            useTls=settings.notify.smtp_tls == "starttls", useSmtps=settings.notify.smtp_tls == "ssl",
            smtpUser=settings.notify.smtp_username or None,
            smtpPassword=_secret(settings.notify.smtp_password_secret),
            sendToInterestedUsers=False, extraRecipients=list(settings.notify.mail_to), generators=generators,
        ))
        log.msg(f"vllm-cpu: release mail to {', '.join(settings.notify.mail_to)} via "
                f"{settings.notify.smtp_host}:{settings.notify.smtp_port} for {', '.join(settings.notify.mail_events)}")
    if settings.notify.irc:
        out.append(ReleaseIRC(
            host=settings.notify.irc_host, port=settings.notify.irc_port, nick=settings.notify.irc_nick,
            channels=list(settings.notify.irc_channels), useSSL=settings.notify.irc_tls,
            password=_secret(settings.notify.irc_password_secret),
            notify_events=_irc_notify_events(settings.notify.irc_events), useColors=False, authz={},
            release_events=settings.notify.irc_events, release_builder=RELEASE, variant_builders=variant_builders,
        ))
    return out
