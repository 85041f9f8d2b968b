"""Release announcements: one mail and one IRC line per release, plus variant build problems.

Buildbot's own reporters do the delivery: ``MailNotifier`` with
``BuildStatusGenerator`` + a message formatter, and the ``IRC`` words bot.
What this module adds is the *content* a release engineer needs: the
release version, each variant × arch result with its wheel, verify/ISA
summary, smoke status (skipped = a warning: the wheel was never run),
where it was uploaded, and links to the build pages.

The text comes from pure functions over data-API build dicts
(``master/notify_text.py``: ``format_release``, ``format_variant``,
``release_irc_line``, ``variant_irc_line``; ``master/readiness_mail.py``:
a broken readiness build) so it is tested without a master; the glue fetches
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

from farm.names import RELEASE, builder_name
from farm.report import fetch_children, finished_release
from farm.settings import Settings
from farm.states import BAD
from master import readiness, readiness_mail
from master.notify_text import (
    READINESS_KIND,
    RELEASE_KIND,
    VARIANT_KIND,
    Build,
    format_release,
    format_variant,
    release_irc_line,
    variant_irc_line,
    wants,
)
from vllm_cpu_build.variants import Catalog

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
        elif self.kind == READINESS_KIND:
            failed_log = yield fetch_failure_log(master, build)
            msg = readiness_mail.format_readiness(build, url, title, failed_log) if build["results"] in BAD else None
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


def mail_generators(settings: Settings, variant_builders: list[str],
                    readiness_builders: Iterable[str] = ()) -> list[BuildStatusGenerator]:
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
    if "readiness_failed" in settings.notify.mail_events and readiness_builders:
        out.append(QuietBuildStatusGenerator(
            builders=list(readiness_builders), mode=("failing", "exception"),
            message_formatter=ReleaseFormatter(READINESS_KIND, settings.index.upload_url)))
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
        generators = mail_generators(settings, variant_builders, readiness.builder_names(settings))
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
