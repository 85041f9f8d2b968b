"""The one file a maintainer edits: ``$VLLM_CPU_BUILDBOT_SETTINGS`` (TOML).

One frozen dataclass per TOML table; a table's keys are its fields, so
parsing, type checks and "unknown key" errors all come from the field
definitions.  Without a file every value is the local sandbox's (everything
under ``.sandbox/`` on 127.0.0.1), so ``buildbot checkconfig`` and
``make run`` work on a fresh clone.  ``master/settings.example.toml``
documents production.  Relative paths are resolved against the settings
file's directory (or the repository root for the defaults).
"""

from __future__ import annotations

import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from pathlib import Path

from packaging.version import InvalidVersion, Version

from farm.checks import SettingsError
from farm.checks import http_url as _url
from farm.checks import no_credentials as _no_credentials
from farm.checks import secret_name as _secret_name
from farm.compile_cache import Cache
from farm.readiness import Readiness, ReadinessError
from vllm_cpu_build.files import Format, read_document

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "VLLM_CPU_BUILDBOT_SETTINGS"
SANDBOX_DIR = REPO_ROOT / ".sandbox"

# v0.11.2, v0.10.1.1, v0.13.0rc1: "release-like" upstream tags. Whether a
# pre-release among them builds is decided by build_prereleases, not here.
DEFAULT_TAG_REGEX = r"^v(?P<version>\d+\.\d+\.\d+(?:\.\d+)?(?:(?:a|b|rc)\d+)?)$"

# What [notify] mail_events / irc_events may name (master/notify.py acts on them).
NOTIFY_EVENTS = ("release_finished", "release_failed", "variant_failed", "variant_warnings", "readiness_failed")


def _db_url(value: str) -> None:
    """SQLite or PostgreSQL through psycopg 3 (the driver in the dependencies); no password in the URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise SettingsError(f"master.db_url: not a database URL: {value!r}") from None
    if url.drivername not in ("sqlite", "postgresql+psycopg"):
        raise SettingsError(f"master.db_url: {url.drivername!r} is not supported; use sqlite:///state.sqlite "
                            "or postgresql+psycopg://user@host:port/database")
    if url.password is not None:
        # The settings file is not a secret; Buildbot renders the secret into the driver's connect arguments.
        raise SettingsError("master.db_url: holds a password; put it in a secret file and name that file "
                            "in master.db_password_secret")


@dataclass(frozen=True)
class Upstream:
    url: str = str(SANDBOX_DIR / "upstream")  # the repository whose tags are released
    tag_regex: str = DEFAULT_TAG_REGEX  # release-like tags; group "version" is the PEP 440 version
    build_prereleases: bool = False  # tags and the re-check build rc/a/b tags too
    poll_interval: int = 5  # seconds between polls of the upstream tags
    recheck_interval: int = 0  # seconds between re-checks of every tag; 0 = off
    recheck_since: str = ""  # oldest version the re-check considers ("" = variants.json first_release)
    recheck_attempts: int = 3  # failures of a missing build after which the re-check leaves it to a maintainer
    # Secret (file in master.secrets_dir, 0600) shared with the upstream's webhook: POST
    # /change_hook/github must carry its HMAC-SHA256 (X-Hub-Signature-256). "" = no webhook.
    webhook_secret: str = ""

    @property
    def tag_pattern(self) -> re.Pattern[str]:
        return re.compile(self.tag_regex)

    def check(self) -> None:
        try:
            pat = re.compile(self.tag_regex)
        except re.error as exc:
            raise SettingsError(f"upstream.tag_regex: not a regular expression: {exc}") from None
        if "version" not in pat.groupindex:
            raise SettingsError("upstream.tag_regex: needs a named group (?P<version>...)")
        if self.poll_interval < 1:
            raise SettingsError("upstream.poll_interval: must be at least 1 second")
        if self.recheck_attempts < 1:
            raise SettingsError("upstream.recheck_attempts: must be at least 1")
        _secret_name("upstream.webhook_secret", self.webhook_secret)
        _no_credentials("upstream.url", self.url)
        if self.recheck_since:
            try:
                Version(self.recheck_since)
            except InvalidVersion:
                raise SettingsError(f"upstream.recheck_since: not a version: {self.recheck_since!r}") from None


@dataclass(frozen=True)
class Index:
    upload_url: str = "http://127.0.0.1:8089/"  # twine upload URL (legacy upload API)
    simple_url: str = "http://127.0.0.1:8089/simple/"  # simple API root (PEP 503/691)
    username: str = "__token__"
    token_secret: str = "index-token"  # secret file name; "{short}" = the variant's short name

    def check(self) -> None:
        _url("index.upload_url", self.upload_url)
        _url("index.simple_url", self.simple_url)
        if "{" in self.token_secret.replace("{short}", ""):
            raise SettingsError("index.token_secret: the only placeholder allowed is {short}")
        _secret_name("index.token_secret", self.token_secret.replace("{short}", "x"))

    def token_for(self, short: str) -> str:
        """Secret name of the upload token for the variant with short name ``short``."""
        return self.token_secret.replace("{short}", short)


@dataclass(frozen=True)
class Build:
    """How workers build (``vllm-cpu-build build`` options); paths are paths **on the worker**."""

    python_versions: str = "auto"  # Pythons when a release does not say: auto = from requires-python
    torch_index_url: str = ""  # torch's index for the build env and smoke; "" = variants.json's; "none" = no extra
    fetchcontent_mirror: str = ""  # <dir>/<name>/<GIT_TAG> sources for CMake FetchContent; "" = CMake downloads
    cmake_args: tuple[str, ...] = ()  # extra CMake arguments, e.g. ["-DONEDNN_BUILD_GRAPH=OFF"]
    root_x86_64: str = ""  # build root (directory or tarball) for x86_64 builds; a worker's build_root wins
    root_aarch64: str = ""  # the same for aarch64
    debug_archive: bool = False  # keep stripped debug info beside each wheel (<wheel>.debug.tar.gz)
    reproduce: bool = False  # rebuild each wheel (fresh dir, no ccache, another worker) and compare before upload

    def root_for(self, arch: str) -> str:
        return {"x86_64": self.root_x86_64, "aarch64": self.root_aarch64}.get(arch, "")

    def check(self) -> None:
        from vllm_cpu_build.specs import SpecError, parse_pythons

        try:
            parse_pythons(self.python_versions)
        except SpecError as exc:
            raise SettingsError(f"build.python_versions: {exc}") from None
        if self.torch_index_url not in ("", "none"):
            _url("build.torch_index_url", self.torch_index_url)
        for key in ("fetchcontent_mirror", "root_x86_64", "root_aarch64"):
            val = getattr(self, key)
            if val and not val.startswith("/"):
                raise SettingsError(f"build.{key}: an absolute path on the worker, got {val!r}")
        for arg in self.cmake_args:
            if not arg.startswith("-") or any(c.isspace() for c in arg):
                raise SettingsError(f"build.cmake_args: {arg!r} is not one CMake option (-D..., no whitespace)")

    def build_args(self) -> list[str]:
        """``vllm-cpu-build build`` options these settings stand for (the root is per worker, see factories)."""
        args: list[str] = []
        if self.torch_index_url:
            args += ["--torch-index-url", "" if self.torch_index_url == "none" else self.torch_index_url]
        if self.fetchcontent_mirror:
            args += ["--fetch-mirror", self.fetchcontent_mirror]
        for a in self.cmake_args:
            args.append(f"--cmake-arg={a}")
        if self.debug_archive:
            args.append("--debug-archive")
        return args

    def smoke_args(self) -> list[str]:
        """``vllm-cpu-build smoke`` options these settings stand for."""
        if not self.torch_index_url:
            return []
        return ["--torch-index-url", "" if self.torch_index_url == "none" else self.torch_index_url]


@dataclass(frozen=True)
class Master:
    title: str = "vllm-cpu (sandbox)"
    web_url: str = "http://127.0.0.1:8010/"
    web_port: int = 8010
    web_interface: str = "127.0.0.1"
    worker_port: int = 9989
    worker_interface: str = "127.0.0.1"
    # SQLite (the sandbox, relative to the basedir) or PostgreSQL: postgresql+psycopg://user@host:port/db
    db_url: str = "sqlite:///state.sqlite"
    db_password_secret: str = ""  # secret file holding the database password; "" = none (SQLite, peer auth)
    secrets_dir: Path = SANDBOX_DIR / "secrets"
    workers_registry: Path = REPO_ROOT / "workers" / "registry.toml"
    log_horizon_days: int = 180  # build logs older than this are deleted nightly; 0 = keep forever
    # In-process workers for the release/recheck builders (they mostly wait):
    # how many releases may run at once.
    local_workers: int = 4
    # Multi-master (several masters on one PostgreSQL database): each master's own name (its
    # in-process workers are <name>-local-N) and the WAMP router they share ("" = one master).
    name: str = "master"
    mq_router_url: str = ""  # ws://host:port/ws of a crossbar router
    mq_realm: str = "buildbot"

    @property
    def web_url_slash(self) -> str:
        return self.web_url if self.web_url.endswith("/") else self.web_url + "/"

    def check(self) -> None:
        _url("master.web_url", self.web_url)
        for where, port in (("master.web_port", self.web_port), ("master.worker_port", self.worker_port)):
            if port > 65535:
                raise SettingsError(f"{where}: must be a TCP port 0-65535, got {port}")
        if self.local_workers < 1:
            raise SettingsError("master.local_workers: must be at least 1 (the release builder runs on them)")
        _db_url(self.db_url)
        _secret_name("master.db_password_secret", self.db_password_secret)
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", self.name):
            raise SettingsError(f"master.name: {self.name!r} must be lowercase letters, digits and '-'")
        if self.mq_router_url:
            if not re.match(r"^wss?://", self.mq_router_url):
                raise SettingsError(f"master.mq_router_url: must be a ws:// or wss:// URL, got {self.mq_router_url!r}")
            if self.db_url.startswith("sqlite"):
                raise SettingsError("master.mq_router_url: several masters need a shared database; "
                                    "master.db_url is SQLite")
            if not self.mq_realm:
                raise SettingsError("master.mq_realm: empty while mq_router_url is set")


@dataclass(frozen=True)
class Www:
    users_file: Path | None = None  # set => login required to force/stop/rebuild (argon2 hashes, 0600)
    admins: tuple[str, ...] = ()
    max_request_bytes: int = 65536  # larger request bodies (REST, webhook, login) get HTTP 400 unread
    max_builds_per_request: int = 100  # variant x arch builds one force request may start at most
    # The release matrix is recomputed at most this often (seconds), and after every finished build.
    matrix_interval: int = 10

    def check(self) -> None:
        if self.matrix_interval < 0:
            raise SettingsError("www.matrix_interval: must be 0 (every request) or more seconds")
        if self.max_request_bytes < 1024:
            raise SettingsError("www.max_request_bytes: must be at least 1024 (the force form posts ~1 KB)")
        if self.max_builds_per_request < 1:
            raise SettingsError("www.max_builds_per_request: must be at least 1")


@dataclass(frozen=True)
class Notify:
    """Release mail and IRC announcements (master/notify.py); off unless enabled."""

    mail: bool = False
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: str = "none"  # none | starttls | ssl
    smtp_username: str = ""
    smtp_password_secret: str = ""  # secret file name; "" = no SMTP AUTH
    mail_from: str = "vllm-cpu buildbot <buildbot@localhost.localdomain>"
    mail_to: tuple[str, ...] = ()
    mail_events: tuple[str, ...] = ("release_finished", "variant_failed", "readiness_failed")
    irc: bool = False
    irc_host: str = "127.0.0.1"
    irc_port: int = 6667
    irc_tls: bool = False
    irc_nick: str = "vllm-cpu-bot"
    irc_channels: tuple[str, ...] = ("#vllm-cpu",)
    irc_password_secret: str = ""  # secret file name; "" = no server password
    irc_events: tuple[str, ...] = ("release_finished", "variant_failed")

    def check(self) -> None:
        def address(where: str, value: str) -> None:
            # The domain needs a dot, as Buildbot's MailNotifier insists.
            if not re.fullmatch(r"[^@\s]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\.?", parseaddr(value)[1]):
                raise SettingsError(f"{where}: not an e-mail address (user@host.domain): {value!r}")

        for where, port in (("notify.smtp_port", self.smtp_port), ("notify.irc_port", self.irc_port)):
            if not 1 <= port <= 65535:
                raise SettingsError(f"{where}: must be a TCP port 1-65535, got {port}")
        if self.smtp_tls not in ("none", "starttls", "ssl"):
            raise SettingsError(f"notify.smtp_tls: must be none, starttls or ssl, got {self.smtp_tls!r}")
        for where, events in (("notify.mail_events", self.mail_events), ("notify.irc_events", self.irc_events)):
            unknown = sorted(set(events) - set(NOTIFY_EVENTS))
            if unknown:
                raise SettingsError(f"{where}: unknown event(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(NOTIFY_EVENTS)}")
        _secret_name("notify.smtp_password_secret", self.smtp_password_secret)
        _secret_name("notify.irc_password_secret", self.irc_password_secret)
        if self.mail:
            if not self.smtp_host:
                raise SettingsError("notify.smtp_host: empty while mail is on")
            address("notify.mail_from", self.mail_from)
            if not self.mail_to:
                raise SettingsError("notify.mail_to: no recipients while mail is on")
            for r in self.mail_to:
                address("notify.mail_to", r)
            if self.smtp_password_secret and not self.smtp_username:
                raise SettingsError("notify.smtp_username: needed with smtp_password_secret")
            if not self.mail_events:
                raise SettingsError("notify.mail_events: empty while mail is on")
        if self.irc:
            if not self.irc_host:
                raise SettingsError("notify.irc_host: empty while IRC is on")
            if not re.fullmatch(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*", self.irc_nick):
                raise SettingsError(f"notify.irc_nick: not an IRC nickname: {self.irc_nick!r}")
            if not self.irc_channels:
                raise SettingsError("notify.irc_channels: no channel while IRC is on")
            for c in self.irc_channels:
                if not re.fullmatch(r"[#&][^\s,\x07]+", c):
                    raise SettingsError(f"notify.irc_channels: not a channel name: {c!r}")
            if not self.irc_events:
                raise SettingsError("notify.irc_events: empty while IRC is on")


@dataclass(frozen=True)
class GitHub:
    """A GitHub release per version after its uploads (steps/publish.py); off unless enabled."""

    enabled: bool = False
    repository: str = ""  # owner/name the releases are made in
    api_url: str = "https://api.github.com"  # REST API root (GitHub Enterprise: https://HOST/api/v3)
    token_secret: str = "github-token"  # secret file name: a token allowed to write releases (contents: write)
    attach_wheels: bool = True  # attach the published wheels (downloaded from the index) to the release

    def check(self) -> None:
        _url("github.api_url", self.api_url)
        _secret_name("github.token_secret", self.token_secret)
        if self.enabled and not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", self.repository):
            raise SettingsError(f"github.repository: must be owner/name while github is on, got {self.repository!r}")
        if self.enabled and not self.token_secret:
            raise SettingsError("github.token_secret: empty while github is on")


@dataclass(frozen=True)
class Images:
    """Runtime images per variant, built with buildah and pushed after a release's uploads; off unless enabled."""

    enabled: bool = False
    # Image repositories pushed to, each gets <short>-<version> and <short>-latest.
    repositories: tuple[str, ...] = ()
    base_image: str = "docker.io/library/python:3.12-slim"  # FROM of docker/Dockerfile (a multi-arch image)
    torch_index_url: str = ""  # extra pip index with CPU torch inside the image; "" = variants.json's
    tls_verify: bool = True  # TLS for the registries (false only for a registry on 127.0.0.1)
    auth_secret: str = ""  # secret file name: a containers auth.json for the registries; "" = anonymous
    # Workers with buildah that build the images; () = every x86_64 worker. Other arches are
    # built there too, emulated (qemu-user-static), when the index has wheels for them.
    workers: tuple[str, ...] = ()

    def check(self) -> None:
        _secret_name("images.auth_secret", self.auth_secret)
        for repo in self.repositories:
            # registry/path, lower case as the distribution spec demands; no tag (the tags are derived).
            if not re.fullmatch(r"[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+", repo):
                raise SettingsError(f"images.repositories: not an image repository (registry/name, no tag): {repo!r}")
        if self.enabled and not self.repositories:
            raise SettingsError("images.repositories: none while images is on")
        if self.torch_index_url:
            _url("images.torch_index_url", self.torch_index_url)
        if not self.base_image or any(c.isspace() for c in self.base_image):
            raise SettingsError(f"images.base_image: not an image reference: {self.base_image!r}")


@dataclass(frozen=True)
class Settings:
    source: Path | None = None  # the TOML file read, None = built-in sandbox defaults
    upstream: Upstream = field(default_factory=Upstream)
    index: Index = field(default_factory=Index)
    build: Build = field(default_factory=Build)
    cache: Cache = field(default_factory=Cache)
    master: Master = field(default_factory=Master)
    www: Www = field(default_factory=Www)
    notify: Notify = field(default_factory=Notify)
    github: GitHub = field(default_factory=GitHub)
    images: Images = field(default_factory=Images)
    readiness: Readiness = field(default_factory=Readiness)


TABLES: dict[str, type] = {f.name: f.default_factory for f in fields(Settings)  # type: ignore[misc]
                           if f.name != "source"}


def _value(where: str, hint: object, val: object, base: Path) -> object:
    """``val`` checked against the field's type ``hint`` (str, bool, int, Path, Path | None, tuple[str, ...])."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is Path:
        if not isinstance(val, str) or not val:
            raise SettingsError(f"{where}: must be a path string")
        p = Path(os.path.expanduser(val))
        return p if p.is_absolute() else (base / p).resolve()
    if typing.get_origin(hint) is tuple:
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            raise SettingsError(f"{where}: must be a list of strings")
        return tuple(val)
    if hint is int:
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise SettingsError(f"{where}: must be a non-negative integer")
        return val
    if hint is bool:
        if not isinstance(val, bool):
            raise SettingsError(f"{where}: must be true or false, got {val!r}")
        return val
    if not isinstance(val, str):
        raise SettingsError(f"{where}: must be a string, got {val!r}")
    return val


def _table(name: str, cls: type, raw: object, base: Path) -> object:
    if not isinstance(raw, dict):
        raise SettingsError(f"[{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SettingsError(f"[{name}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    obj = cls(**{k: _value(f"{name}.{k}", hints[k], v, base) for k, v in raw.items()})
    try:
        obj.check()
    except ReadinessError as exc:  # a table kept in a module of its own (farm/readiness.py)
        raise SettingsError(str(exc)) from None
    return obj


def parse(raw: dict, base: Path, source: Path | None = None) -> Settings:
    """Validate a TOML document (already parsed) into Settings."""
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise SettingsError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}")
    tables = {name: _table(name, cls, raw.get(name, {}), base) for name, cls in TABLES.items()}
    return Settings(source=source, **tables)  # type: ignore[arg-type]


def to_dict(settings: Settings) -> dict[str, dict[str, object]]:
    """The TOML document of ``settings``: each table's values that differ from the field defaults."""
    doc: dict[str, dict[str, object]] = {}
    for name in TABLES:
        table = getattr(settings, name)
        default = type(table)()
        values = {f.name: _toml_value(getattr(table, f.name)) for f in fields(table)
                  if getattr(table, f.name) != getattr(default, f.name)}
        if values:
            doc[name] = values
    return doc


def _toml_value(val: object) -> object:
    if isinstance(val, Path):
        return str(val)
    if isinstance(val, tuple):
        return list(val)
    return val


def to_toml(settings: Settings, header: str = "") -> str:
    """``settings`` as a settings file (``parse`` reads back the same ``Settings``); ``header``: comment lines.

    The text is parsed back before it is returned, so a value the schema
    refuses raises ``SettingsError`` naming its key here, not when a master
    reads the file.
    """
    import tomli_w

    if sys.version_info >= (3, 11):
        import tomllib as reader
    else:  # pragma: no cover - 3.10
        import tomli as reader
    text = tomli_w.dumps(to_dict(settings))
    parse(reader.loads(text), REPO_ROOT, settings.source)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + text


def load(path: str | os.PathLike | None = None) -> Settings:
    """Read the settings file (argument, ``$VLLM_CPU_BUILDBOT_SETTINGS``) or return the sandbox defaults."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        return Settings()
    p = Path(chosen).expanduser().resolve()
    raw = read_document(p, Format.TOML, SettingsError, missing=f"settings file not found (from ${ENV_VAR})")
    return parse(raw, p.parent, p)


__all__ = ["ENV_VAR", "NOTIFY_EVENTS", "REPO_ROOT", "Build", "Cache", "GitHub", "Images", "Index", "Master", "Notify",
           "Readiness", "Settings", "SettingsError", "Upstream", "Www", "load", "parse", "replace", "to_dict",
           "to_toml"]
