"""Reading files: the one loader for the project's own input files, and the one file digest.

``read_document`` (variants.json, the settings and the worker registry
TOML) reads and parses a file and turns every way that can fail (missing,
unreadable, not UTF-8, not JSON/TOML) into the caller's own error type,
with a message that starts with the path: each file keeps its named error
(``VariantsError``, ``SettingsError``, ``RegistryError``) and every reader
says the same thing the same way.  ``sha256_of`` is the digest every
record and index check names a file by.  Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from vllm_cpu_build.enums import Name


class Format(Name):
    JSON = "JSON"
    TOML = "TOML"


def read_document(path: Path, fmt: Format, error: type[Exception], missing: str = "not found") -> Any:
    """The parsed content of ``path``; raises ``error`` with a message starting ``<path>: ``.

    ``missing``: what to say when there is no such file (``worker registry not found``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if fmt is Format.JSON:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: not valid JSON: {exc}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10: the master's TOML files only, never a worker's
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
