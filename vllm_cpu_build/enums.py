"""The toolchain's closed sets of names, as enums.

Each is a string enum: a member *is* its string, so JSON documents, build
properties, log lines and comparisons with plain strings read exactly as
before, while a typo in the code is a type error and a value from outside
is refused by name (``Arch("arm64")`` fails; the alias is the parser's,
``specs.parse_arch``).
"""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10 workers
    class StrEnum(str, enum.Enum):
        def __str__(self) -> str:
            return str(self.value)


class Name(StrEnum):
    """Base of every set here: ``str()``, ``format()`` and ``repr()`` are the value's, as for a plain string."""

    def __repr__(self) -> str:
        return repr(self.value)


class Arch(Name):
    """A CPU architecture a wheel is built for (the platform tag's and ``uname -m``'s spelling)."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"


class SmokeStatus(Name):
    """What ``smoke`` concluded (exit 0, 1, 3)."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # this CPU lacks the variant's ISA: nothing ran


class FloorStatus(Name):
    """The smoke run again on the oldest CPU the package promises (variants.json ``floor``)."""

    PASSED = "passed"
    FAILED = "failed"
    NATIVE_ONLY = "native only"  # QEMU cannot be that CPU: only a host with it shows the floor
    NOT_RUN = "not run"  # the smoke failed on this CPU first


class BuildEnvKind(Name):
    """Which interpreter ``build`` compiles with."""

    MANAGED = "managed"  # a cached venv holding the release's own build requirements
    INTERPRETER = "interpreter"  # --python as it is


class Inference(Name):
    """``smoke --inference``: the tiny-model run through ``vllm.LLM``."""

    AUTO = "auto"  # for real vLLM (a wheel that requires torch)
    ON = "on"
    OFF = "off"


class RunnerKind(Name):
    """Where a build's commands ran."""

    HOST = "host"
    ROOT = "root"  # a build root file system, with bubblewrap


class ImageStatus(Name):
    """What ``image`` did."""

    PLANNED = ""  # plan() resolved version, arches and tags; nothing built yet
    PUSHED = "pushed"
    DRY_RUN = "dry_run"
    NOTHING_PUBLISHED = "nothing_published"  # no wheel of that version to build from (exit 3)


class DiffKind(Name):
    """How a wheel member differs between two wheels (``compare``)."""

    CONTENT = "content"  # the bytes differ (for ELF members: ``sections`` names where)
    ONLY_IN_A = "only_in_a"
    ONLY_IN_B = "only_in_b"
    ZIPINFO = "zipinfo"  # same bytes, other archive metadata: ``fields`` (mode, date_time, ...)
    ARCHIVE = "archive"  # same members, the archive differs: entry order, comment (member "")


class CheckName(Name):
    """The checks of ``verify``, in the order they run and are reported."""

    ZIP_CRC = "zip-crc"
    RECORD = "record"
    METADATA = "metadata"
    TAGS = "tags"
    TWINE = "twine"
    MANYLINUX = "manylinux"
    ISA = "isa"
    PROVENANCE = "provenance"
