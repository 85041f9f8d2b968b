"""Plain-text ``--help`` for every command line of the project: one parser class, one formatter.

Module docstrings are reStructuredText (````vllm-cpu-build plan````); a
terminal shows the backticks literally.  ``Parser`` (an ``ArgumentParser``
whose sub-parsers are ``Parser`` too) formats its description, epilog and
every option's help through ``plain``, and ``describe`` takes a docstring's
first paragraph as a description.  The toolchain, ``python -m workers``,
``python -m master users``, ``python -m master.systemd`` and
``python -m sandbox`` build their parsers with it.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from typing import Any

# ``literal``, `interpreted`, :role:`text`; the text inside stays.
_ROLE = re.compile(r":[a-z]+:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"`([^`]+)`")
WIDTH = 79  # descriptions are filled here; the formatter keeps line breaks (exit-code tables)


def plain(text: str) -> str:
    """``text`` without reStructuredText/Markdown inline markup (backticks)."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return _INTERPRETED.sub(r"\1", text)


def describe(doc: str | None, extra: str = "", paragraph: int = 0, width: int = WIDTH) -> str:
    """Paragraph ``paragraph`` of a docstring, then ``extra``: plain text filled to ``width``."""
    parts = (doc or "").strip().split("\n\n")
    text = parts[paragraph] if paragraph < len(parts) else ""
    return textwrap.fill(plain(" ".join(f"{text} {extra}".split())), width)


class PlainFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (exit-code tables) and drops backticks."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` with ``PlainFormatter``; ``add_subparsers`` makes ``Parser`` sub-parsers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", PlainFormatter)
        super().__init__(*args, **kwargs)
