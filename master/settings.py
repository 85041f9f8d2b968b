"""The one file a maintainer edits: ``$VLLM_CPU_BUILDBOT_SETTINGS`` (TOML).

Without that file every value is the local sandbox's (everything under
``.sandbox/`` on 127.0.0.1), so ``buildbot checkconfig`` and ``make run``
work on a fresh clone.  ``master/settings.example.toml`` documents production.
Relative paths are resolved against the settings file's directory (or the
repository root for the defaults).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "VLLM_CPU_BUILDBOT_SETTINGS"
SANDBOX_DIR = REPO_ROOT / ".sandbox"

# v0.11.2, v0.10.1.1, v0.13.0rc1: "release-like" upstream tags. Whether a
# pre-release among them builds is decided by build_prereleases, not here.
DEFAULT_TAG_REGEX = r"^v(?P<version>\d+\.\d+\.\d+(?:\.\d+)?(?:(?:a|b|rc)\d+)?)$"


class SettingsError(ValueError):
    """The settings file is malformed; the message names the key."""


@dataclass(frozen=True)
class Settings:
    source: Path | None = None  # the TOML file read, None = built-in sandbox defaults
    # [upstream]
    upstream_url: str = str(SANDBOX_DIR / "upstream")
    tag_regex: str = DEFAULT_TAG_REGEX
    build_prereleases: bool = False
    poll_interval: int = 5
    recheck_interval: int = 0  # seconds between re-checks of every tag; 0 = off
    recheck_since: str = ""  # oldest version the re-check considers ("" = variants.json first_release)
    recheck_attempts: int = 3  # failed releases of a version after which the re-check leaves it to a maintainer
    # [index]
    upload_url: str = "http://127.0.0.1:8089/"
    simple_url: str = "http://127.0.0.1:8089/simple/"
    index_username: str = "__token__"
    token_secret: str = "index-token"  # secret file name; "{short}" = the variant's short name
    # [build]
    python_versions: str = "auto"
    # [master]
    title: str = "vllm-cpu (sandbox)"
    web_url: str = "http://127.0.0.1:8010/"
    web_port: int = 8010
    web_interface: str = "127.0.0.1"
    worker_port: int = 9989
    worker_interface: str = "127.0.0.1"
    db_url: str = "sqlite:///state.sqlite"
    secrets_dir: Path = SANDBOX_DIR / "secrets"
    workers_registry: Path = REPO_ROOT / "workers" / "registry.toml"
    log_horizon_days: int = 180  # build logs older than this are deleted nightly; 0 = keep forever
    # [www]
    users_file: Path | None = None  # htpasswd file; set => login required to force/stop
    admins: tuple[str, ...] = field(default_factory=tuple)
    # [notify] release mail and IRC announcements (master/notify.py); off unless enabled
    mail_enabled: bool = False
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: str = "none"  # none | starttls | ssl
    smtp_username: str = ""
    smtp_password_secret: str = ""  # secret file name; "" = no SMTP AUTH
    mail_from: str = "vllm-cpu buildbot <buildbot@localhost.localdomain>"
    mail_to: tuple[str, ...] = field(default_factory=tuple)
    mail_events: tuple[str, ...] = ("release_finished", "variant_failed")
    irc_enabled: bool = False
    irc_host: str = "127.0.0.1"
    irc_port: int = 6667
    irc_tls: bool = False
    irc_nick: str = "vllm-cpu-bot"
    irc_channels: tuple[str, ...] = ("#vllm-cpu",)
    irc_password_secret: str = ""  # secret file name; "" = no server password
    irc_events: tuple[str, ...] = ("release_finished", "variant_failed")

    @property
    def tag_pattern(self) -> re.Pattern[str]:
        return re.compile(self.tag_regex)

    @property
    def web_url_slash(self) -> str:
        return self.web_url if self.web_url.endswith("/") else self.web_url + "/"


# TOML table.key -> Settings field name and type
_SCHEMA: dict[str, dict[str, tuple[str, type]]] = {
    "upstream": {
        "url": ("upstream_url", str),
        "tag_regex": ("tag_regex", str),
        "build_prereleases": ("build_prereleases", bool),
        "poll_interval": ("poll_interval", int),
        "recheck_interval": ("recheck_interval", int),
        "recheck_since": ("recheck_since", str),
        "recheck_attempts": ("recheck_attempts", int),
    },
    "index": {
        "upload_url": ("upload_url", str),
        "simple_url": ("simple_url", str),
        "username": ("index_username", str),
        "token_secret": ("token_secret", str),
    },
    "build": {"python_versions": ("python_versions", str)},
    "master": {
        "title": ("title", str),
        "web_url": ("web_url", str),
        "web_port": ("web_port", int),
        "web_interface": ("web_interface", str),
        "worker_port": ("worker_port", int),
        "worker_interface": ("worker_interface", str),
        "db_url": ("db_url", str),
        "secrets_dir": ("secrets_dir", Path),
        "workers_registry": ("workers_registry", Path),
        "log_horizon_days": ("log_horizon_days", int),
    },
    "www": {"users_file": ("users_file", Path), "admins": ("admins", list)},
    "notify": {
        "mail": ("mail_enabled", bool),
        "smtp_host": ("smtp_host", str),
        "smtp_port": ("smtp_port", int),
        "smtp_tls": ("smtp_tls", str),
        "smtp_username": ("smtp_username", str),
        "smtp_password_secret": ("smtp_password_secret", str),
        "mail_from": ("mail_from", str),
        "mail_to": ("mail_to", list),
        "mail_events": ("mail_events", list),
        "irc": ("irc_enabled", bool),
        "irc_host": ("irc_host", str),
        "irc_port": ("irc_port", int),
        "irc_tls": ("irc_tls", bool),
        "irc_nick": ("irc_nick", str),
        "irc_channels": ("irc_channels", list),
        "irc_password_secret": ("irc_password_secret", str),
        "irc_events": ("irc_events", list),
    },
}

# What [notify] mail_events / irc_events may name (master/notify.py acts on them).
NOTIFY_EVENTS = ("release_finished", "release_failed", "variant_failed", "variant_warnings")


def parse(raw: dict, base: Path, source: Path | None = None) -> Settings:
    """Validate a TOML document (already parsed) into Settings."""
    values: dict[str, object] = {}
    unknown_tables = sorted(set(raw) - set(_SCHEMA))
    if unknown_tables:
        raise SettingsError(f"unknown table(s) {', '.join(unknown_tables)}; known: {', '.join(_SCHEMA)}")
    for table, keys in _SCHEMA.items():
        section = raw.get(table, {})
        if not isinstance(section, dict):
            raise SettingsError(f"[{table}] must be a table")
        unknown = sorted(set(section) - set(keys))
        if unknown:
            raise SettingsError(f"[{table}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(keys)}")
        for key, val in section.items():
            name, typ = keys[key]
            where = f"{table}.{key}"
            if typ is Path:
                if not isinstance(val, str) or not val:
                    raise SettingsError(f"{where}: must be a path string")
                p = Path(os.path.expanduser(val))
                values[name] = p if p.is_absolute() else (base / p).resolve()
            elif typ is list:
                if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
                    raise SettingsError(f"{where}: must be a list of strings")
                values[name] = tuple(val)
            elif typ is int:
                if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                    raise SettingsError(f"{where}: must be a non-negative integer")
                values[name] = val
            elif not isinstance(val, typ):
                raise SettingsError(f"{where}: must be {typ.__name__}, got {val!r}")
            else:
                values[name] = val
    s = Settings(source=source, **values)  # type: ignore[arg-type]
    _check(s)
    return s


def _check(s: Settings) -> None:
    try:
        pat = re.compile(s.tag_regex)
    except re.error as exc:
        raise SettingsError(f"upstream.tag_regex: not a regular expression: {exc}") from None
    if "version" not in pat.groupindex:
        raise SettingsError("upstream.tag_regex: needs a named group (?P<version>...)")
    if s.poll_interval < 1:
        raise SettingsError("upstream.poll_interval: must be at least 1 second")
    for name in ("upload_url", "simple_url", "web_url"):
        if not re.match(r"^https?://", getattr(s, name)):
            raise SettingsError(f"{name}: must be an http(s) URL")
    if s.log_horizon_days < 0:
        raise SettingsError("master.log_horizon_days: must be 0 (keep forever) or more")
    if s.recheck_attempts < 1:
        raise SettingsError("upstream.recheck_attempts: must be at least 1")
    if s.recheck_since:
        from packaging.version import InvalidVersion, Version

        try:
            Version(s.recheck_since)
        except InvalidVersion:
            raise SettingsError(f"upstream.recheck_since: not a version: {s.recheck_since!r}") from None
    if "{" in s.token_secret.replace("{short}", ""):
        raise SettingsError("index.token_secret: the only placeholder allowed is {short}")
    _check_notify(s)


def _check_notify(s: Settings) -> None:
    from email.utils import parseaddr

    def address(where: str, value: str) -> None:
        # The domain needs a dot, as Buildbot's MailNotifier insists.
        if not re.fullmatch(r"[^@\s]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\.?", parseaddr(value)[1]):
            raise SettingsError(f"{where}: not an e-mail address (user@host.domain): {value!r}")

    for where, port in (("notify.smtp_port", s.smtp_port), ("notify.irc_port", s.irc_port)):
        if not 1 <= port <= 65535:
            raise SettingsError(f"{where}: must be a TCP port 1-65535, got {port}")
    if s.smtp_tls not in ("none", "starttls", "ssl"):
        raise SettingsError(f"notify.smtp_tls: must be none, starttls or ssl, got {s.smtp_tls!r}")
    for where, events in (("notify.mail_events", s.mail_events), ("notify.irc_events", s.irc_events)):
        unknown = sorted(set(events) - set(NOTIFY_EVENTS))
        if unknown:
            raise SettingsError(f"{where}: unknown event(s) {', '.join(unknown)}; known: {', '.join(NOTIFY_EVENTS)}")
    for where, name in (("notify.smtp_password_secret", s.smtp_password_secret),
                        ("notify.irc_password_secret", s.irc_password_secret)):
        if "/" in name or name.startswith("."):
            raise SettingsError(f"{where}: a secret is a file name in secrets_dir, got {name!r}")
    if s.mail_enabled:
        if not s.smtp_host:
            raise SettingsError("notify.smtp_host: empty while mail is on")
        address("notify.mail_from", s.mail_from)
        if not s.mail_to:
            raise SettingsError("notify.mail_to: no recipients while mail is on")
        for r in s.mail_to:
            address("notify.mail_to", r)
        if s.smtp_password_secret and not s.smtp_username:
            raise SettingsError("notify.smtp_username: needed with smtp_password_secret")
        if not s.mail_events:
            raise SettingsError("notify.mail_events: empty while mail is on")
    if s.irc_enabled:
        if not s.irc_host:
            raise SettingsError("notify.irc_host: empty while IRC is on")
        if not re.fullmatch(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*", s.irc_nick):
            raise SettingsError(f"notify.irc_nick: not an IRC nickname: {s.irc_nick!r}")
        if not s.irc_channels:
            raise SettingsError("notify.irc_channels: no channel while IRC is on")
        for c in s.irc_channels:
            if not re.fullmatch(r"[#&][^\s,\x07]+", c):
                raise SettingsError(f"notify.irc_channels: not a channel name: {c!r}")
        if not s.irc_events:
            raise SettingsError("notify.irc_events: empty while IRC is on")


def load(path: str | os.PathLike | None = None) -> Settings:
    """Read the settings file (argument, ``$VLLM_CPU_BUILDBOT_SETTINGS``) or return the sandbox defaults."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        return Settings()
    p = Path(chosen).expanduser().resolve()
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{p}: settings file not found (from ${ENV_VAR})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{p}: not valid TOML: {exc}") from None
    return parse(raw, p.parent, p)


def field_names() -> list[str]:
    return [f.name for f in fields(Settings)]
