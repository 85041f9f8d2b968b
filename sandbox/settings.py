"""The sandbox's settings file and secrets, written through ``farm.settings``' own types.

``settings_for`` builds the ``farm.settings.Settings`` a sandbox runs with
(everything on 127.0.0.1, state under its root); ``write`` serialises it
with ``farm.settings.to_toml`` (the writer next to the schema, which parses
the text back, so a value the schema refuses fails here, naming its key)
and writes the secrets beside it, each a 0600 file in ``secrets_dir``.
A test that needs another table replaces it on the dataclasses
(``dataclasses.replace(settings, notify=Notify(...))``), never as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from farm.settings import (
    Build,
    Cache,
    GitHub,
    Images,
    Index,
    Master,
    Readiness,
    Settings,
    Upstream,
    Www,
    replace,
    to_toml,
)
from testbed.fixture_upstream import MIRROR
from workers import registry

if TYPE_CHECKING:
    from sandbox.core import Sandbox

WEBHOOK_SECRET = "upstream-webhook"  # secret name of the tag webhook's shared secret
INDEX_TOKEN = "index-token"
GITHUB_TOKEN = "github-token"
CACHE_PASSWORD = "ccache-redis"
HEADER = "Written by the sandbox (sandbox/settings.py): everything on 127.0.0.1."


def settings_for(sb: Sandbox) -> Settings:
    """The settings of sandbox ``sb``: its upstream, index, ports, secrets, logins and publishing."""
    upstream = Upstream(url=str(sb.upstream), webhook_secret=WEBHOOK_SECRET, poll_interval=sb.poll_interval,
                        recheck_interval=sb.recheck_interval, recheck_since=sb.recheck_since)
    if sb.recheck_attempts is not None:
        upstream = replace(upstream, recheck_attempts=sb.recheck_attempts)
    # Fresh on every request: the tests plant index files and read the matrix at once.
    www = Www(matrix_interval=0)
    if sb.users:
        www = replace(www, users_file=sb.users_file, admins=tuple(sb.admins))
    if sb.max_builds_per_request is not None:
        www = replace(www, max_builds_per_request=sb.max_builds_per_request)
    return Settings(
        upstream=upstream,
        # The fixture's AVX-512 builds need its FetchContent mirror, as a production worker needs a
        # oneDNN mirror to build offline.
        build=Build(fetchcontent_mirror=str(MIRROR), reproduce=sb.reproduce),
        cache=Cache(sb.cache.url, CACHE_PASSWORD) if sb.cache else Cache(),
        index=Index(upload_url=sb.index_url, simple_url=sb.simple_url, username="sandbox", token_secret=INDEX_TOKEN),
        master=Master(title="vllm-cpu sandbox", web_url=sb.web_url, web_port=sb.web_port,
                      worker_port=sb.worker_port, db_url="sqlite:///state.sqlite", secrets_dir=sb.secrets_dir,
                      workers_registry=sb.registry_file),
        www=www,
        github=_github(sb),
        images=_images(sb),
        # Readiness builds by the "Readiness now" button only: a nightly one would land in whatever
        # test or demo runs at that hour.
        readiness=Readiness(nightly=False),
    )


def _github(sb: Sandbox) -> GitHub:
    if not sb.github:
        return GitHub()
    return GitHub(enabled=True, api_url=sb.github["api_url"], repository=sb.github["repository"],
                  token_secret=GITHUB_TOKEN)


def _images(sb: Sandbox) -> Images:
    if not sb.images:
        return Images()
    im = sb.images
    return Images(enabled=True, repositories=tuple(im["repositories"]), base_image=im["base_image"],
                  torch_index_url=sb.simple_url, tls_verify=bool(im.get("tls_verify", True)))


def write(sb: Sandbox, settings: Settings) -> Path:
    """Write the secrets ``settings`` name and the settings file; returns the file."""
    secrets_dir = settings.master.secrets_dir
    if settings.www.users_file is not None:  # argon2 hashes, a secret like the others: mode 0600
        from master import users

        users.write(settings.www.users_file, {u: users.hash_password(pw) for u, pw in sb.users.items()})
    registry.write_secret(secrets_dir, WEBHOOK_SECRET, sb.webhook_secret)
    registry.write_secret(secrets_dir, INDEX_TOKEN, sb.index_token)
    if sb.github:
        registry.write_secret(secrets_dir, GITHUB_TOKEN, sb.github["token"])
    if sb.cache:
        registry.write_secret(secrets_dir, CACHE_PASSWORD, sb.cache.password)
    path = sb.settings_file
    path.write_text(to_toml(settings, HEADER))
    return path
