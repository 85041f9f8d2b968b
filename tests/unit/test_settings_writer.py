"""``farm.settings.to_toml``: the one settings writer, next to the schema it writes.

``parse(to_toml(s)) == s`` for the documented production file, for
settings with every field away from its default, and for the sandbox's
own settings file (``sandbox.settings``), which a master then loads.
"""

from __future__ import annotations

import stat
from dataclasses import fields, replace
from pathlib import Path

import pytest
import tomllib

from farm import settings as S

REPO = Path(__file__).resolve().parents[2]


def round_trip(s: S.Settings) -> S.Settings:
    return S.parse(tomllib.loads(S.to_toml(s)), REPO, s.source)


def test_the_production_example_round_trips() -> None:
    example = S.load(REPO / "master" / "settings.example.toml")
    assert example != S.Settings(source=example.source)  # it does set values
    assert round_trip(example) == example


def test_every_field_away_from_its_default_round_trips(tmp_path: Path) -> None:
    # A value of each field's type that differs from its default and passes the schema's checks.
    odd = {str: "x", int: 7, Path: tmp_path / "q\u00e9 \"x\"", tuple: ("a", "b\\c")}
    special = {
        "upstream": {"url": "git@example.org:v/vllm.git", "tag_regex": r"^v(?P<version>\d+\.\d+)$",
                     "recheck_since": "0.11.0", "webhook_secret": "hook"},
        "index": {"upload_url": "https://i.example/legacy/", "simple_url": "https://i.example/simple/",
                  "token_secret": "tok-{short}"},
        "build": {"python_versions": "3.10,3.12", "torch_index_url": "none", "fetchcontent_mirror": "/srv/m",
                  "cmake_args": ("-DA=1", "-DB=2"), "root_x86_64": "/srv/r.tar", "root_aarch64": "/srv/a"},
        "master": {"web_url": "https://bb.example/", "db_url": "postgresql+psycopg://bb@db:5432/bb",
                   "db_password_secret": "db", "name": "m-1", "mq_router_url": "ws://r:9000/ws", "mq_realm": "r"},
        "cache": {"remote": "redis://10.0.0.1:6380/1|connect-timeout=500", "password_secret": "ccache-redis"},
        "www": {"users_file": tmp_path / "users", "admins": ("alice",), "max_request_bytes": 2048},
        "notify": {"smtp_tls": "ssl", "smtp_username": "u", "smtp_password_secret": "p",
                   "mail_from": "bb <bb@example.org>", "mail_to": ("a@example.org",),
                   "mail_events": ("release_failed",), "irc_nick": "bot", "irc_channels": ("#c",),
                   "irc_password_secret": "i", "irc_events": ("variant_warnings",)},
        "github": {"repository": "o/r", "api_url": "https://gh.example/api/v3", "token_secret": "gh"},
        "images": {"repositories": ("reg.example:5000/vllm-cpu",), "base_image": "debian:12",
                   "torch_index_url": "https://t.example/simple/", "auth_secret": "auth", "workers": ("w1",)},
    }
    tables = {}
    for name, cls in S.TABLES.items():
        default, values = cls(), {}
        for f in fields(cls):
            kind = next((t for t in (bool, int, str, tuple) if str(f.type).startswith(t.__name__)), Path)
            value = not getattr(default, f.name) if kind is bool else odd[kind]
            values[f.name] = special.get(name, {}).get(f.name, value)
        tables[name] = cls(**values)
    s = S.Settings(source=tmp_path / "settings.toml", **tables)
    for name in S.TABLES:
        table, default = getattr(s, name), S.TABLES[name]()
        assert all(getattr(table, f.name) != getattr(default, f.name) for f in fields(table)), name
    assert round_trip(s) == s


def test_defaults_write_an_empty_file_and_a_header_is_comments() -> None:
    assert S.to_toml(S.Settings()) == ""
    text = S.to_toml(replace(S.Settings(), master=S.Master(title="t")), "line one\n\nline two")
    assert text.startswith("# line one\n#\n# line two\n[master]\n")
    assert tomllib.loads(text) == {"master": {"title": "t"}}


def test_a_value_the_schema_refuses_is_named_when_written() -> None:
    bad = replace(S.Settings(), master=S.Master(web_port=70000))
    with pytest.raises(S.SettingsError, match="master.web_port"):
        S.to_toml(bad)


def test_the_sandbox_writes_its_settings_through_the_schema(tmp_path: Path) -> None:
    from sandbox import Sandbox
    from testbed.fixture_upstream import MIRROR

    sb = Sandbox(tmp_path / "sb", web_port=0, worker_port=0, index_port=0, recheck_attempts=2,
                 users={"alice": "pw"}, admins=("alice",), max_builds_per_request=5)
    sb.secrets_dir.mkdir(parents=True)
    sb.write_settings()
    loaded = S.load(sb.settings_file)
    assert replace(loaded, source=None) == sb.settings()
    assert loaded.master.web_port == sb.web_port and loaded.index.simple_url == sb.simple_url
    assert loaded.upstream.recheck_attempts == 2 and loaded.www.admins == ("alice",)
    assert loaded.build.fetchcontent_mirror == str(MIRROR) and MIRROR.is_dir()
    for secret in ("www-users", "upstream-webhook", "index-token"):
        assert stat.S_IMODE((sb.secrets_dir / secret).stat().st_mode) == 0o600, secret
    assert (sb.secrets_dir / "index-token").read_text() == sb.index_token
