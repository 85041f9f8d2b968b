"""Checks the settings tables share: URLs without credentials, secret names, the error they raise.

Kept apart from ``farm.settings`` so a table in a module of its own
(``farm.compile_cache``) applies the same rules without importing the
module that imports it.
"""

from __future__ import annotations

import re


class SettingsError(ValueError):
    """The settings file is malformed; the message names the key."""


def http_url(where: str, value: str) -> None:
    if not re.match(r"^https?://", value):
        raise SettingsError(f"{where}: must be an http(s) URL, got {value!r}")
    no_credentials(where, value)


def no_credentials(where: str, value: str) -> None:
    """URLs end up in changes, step command lines, logs and the matrix JSON: never with a user or password.

    The error does not repeat the URL (it holds the secret)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return  # not a URL: the field's own check says so
    if "@" in (parts.netloc or "") or parts.username or parts.password:
        raise SettingsError(f"{where}: holds credentials (user:password@); they would show in logs and pages. "
                            "Use a token secret (index tokens, github.token_secret, cache.password_secret) "
                            "or a git credential helper")


def secret_name(where: str, value: str) -> None:
    if "/" in value or value.startswith("."):
        raise SettingsError(f"{where}: a secret is a file name in master.secrets_dir, got {value!r}")
