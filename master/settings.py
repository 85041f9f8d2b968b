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
    # [www]
    users_file: Path | None = None  # htpasswd file; set => login required to force/stop
    admins: tuple[str, ...] = field(default_factory=tuple)

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
    },
    "www": {"users_file": ("users_file", Path), "admins": ("admins", list)},
}


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
    if s.recheck_since:
        from packaging.version import InvalidVersion, Version

        try:
            Version(s.recheck_since)
        except InvalidVersion:
            raise SettingsError(f"upstream.recheck_since: not a version: {s.recheck_since!r}") from None
    if "{" in s.token_secret.replace("{short}", ""):
        raise SettingsError("index.token_secret: the only placeholder allowed is {short}")


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
