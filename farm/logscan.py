"""What a build log says at a glance: its error lines and the compile progress.

One reader of compiler, linker, CMake, ninja/make and pip output, shared by
the Buildbot steps (``steps/toolchain.py``: the failing step's summary
carries the first error line, a running build shows ``[45%]``) and the
failure mail (``master/notify.py``: the first error lines and the end of the
log).
"""

from __future__ import annotations

import re

LOG_TAIL_LINES = 15
LOG_ERROR_LINES = 10
SUMMARY_CHARS = 200  # a step summary is one line in the UI

# Diagnostics, most telling first: "file.c:305:2: error: ...", "CMake Error at ...",
# the linker, pip; ninja's "FAILED: obj.o" only names what failed to build.
_DIAGNOSTIC = re.compile(
    r":\d+(?::\d+)?: (?:fatal )?error:"
    r"|^\s*CMake Error\b"
    r"|undefined reference to"
    # pip: "ERROR: Could not find a version that satisfies the requirement torch==..."; its
    # "Failed building wheel" only repeats that the build above failed.
    r"|^\s*ERROR: (?!Failed building wheel|Failed to build)"
)
_FAILED = re.compile(r"^\s*FAILED: ")
# CMake's own line only says where; the message is on the next non-blank line.
_CMAKE_ERROR = re.compile(r"^\s*CMake Error\b.*:\s*$")
# ninja "[12/80] Building CXX ..." or make/CMake "[ 45%] Building C object ...".
_PROGRESS = re.compile(r"^\s*\[\s*(?:(\d+)/(\d+)|(\d+)%)\]")


def is_error(line: str) -> bool:
    return bool(_DIAGNOSTIC.search(line) or _FAILED.search(line))


def log_excerpt(text: str) -> tuple[list[str], list[str]]:
    """(first error lines, last lines) of a failed step's log text: what the failure mail quotes."""
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    errors = [line for line in lines if is_error(line)][:LOG_ERROR_LINES]
    return errors, lines[-LOG_TAIL_LINES:]


def progress(line: str) -> str | None:
    """``"45%"`` or ``"12/80"`` when ``line`` is a CMake/make or ninja progress line."""
    m = _PROGRESS.match(line)
    if not m:
        return None
    if m.group(3) is not None:
        return f"{int(m.group(3))}%"
    done, total = int(m.group(1)), int(m.group(2))
    return f"{done}/{total}" if total else None


class FirstError:
    """Feed log lines; ``line`` is the first compiler/CMake/linker/pip error (else ninja's FAILED:)."""

    def __init__(self) -> None:
        self.diagnostic = ""
        self.failed = ""
        self._cmake_pending = False

    def feed(self, line: str) -> None:
        text = line.strip()
        if self._cmake_pending:
            if text:
                self.diagnostic = f"{self.diagnostic} {text}"
                self._cmake_pending = False
            return
        if self.diagnostic:
            return
        if _DIAGNOSTIC.search(line):
            self.diagnostic = text
            self._cmake_pending = bool(_CMAKE_ERROR.match(line))
        elif not self.failed and _FAILED.search(line):
            self.failed = text

    @property
    def line(self) -> str:
        found = self.diagnostic or self.failed
        return found if len(found) <= SUMMARY_CHARS else found[: SUMMARY_CHARS - 3] + "..."
