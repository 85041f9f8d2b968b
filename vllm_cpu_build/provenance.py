"""The provenance record of a wheel: what it was built from, with what, and what the checks said.

One typed record (``Record``, schema 1) per wheel, written by ``build``,
checked by ``verify``, added to by ``verify`` and ``smoke``, shown on the
build page and, in short (``Digest``), in the GitHub release notes.  It is
kept in two places:

* inside the wheel, ``<name>-<version>.dist-info/vllm_cpu_build.json``
  (listed in RECORD): it travels with the wheel to the index, so anyone
  holding the wheel can read how it was made
  (``importlib.metadata.distribution("vllm-cpu").read_text("vllm_cpu_build.json")``);
* beside the wheel, ``<wheel>.provenance.json``: the same plus the wheel's
  name and sha256, and the sections later steps add (``verify``: every check
  and the ISA counts per module; ``smoke``).

Fields: ``package``, ``version``, ``arch``, ``variant`` (ISA flags, pinned
cpuinfo flags), ``source`` (upstream version, sdist and sha256 or git tag
and commit), ``build`` (ISA switches and other environment, CMake
arguments, FetchContent sources, Python, compiler, build root, build env
packages), ``torch`` (the wheel's pin, the torch built against, whether they
match), ``platform`` (policy, what the binaries need, the tag given),
``strip`` (bytes per module before/after), ``rust_frontend`` (releases that
build one), ``source_date_epoch`` (the reproducible build's time); beside
the wheel only, ``rebuild_sha256`` (the master's rebuild of the tag on
another worker, compared before upload).  ``jsondoc`` turns it into JSON and back, checking every field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_cpu_build import jsondoc
from vllm_cpu_build.enums import Arch, BuildEnvKind, FloorStatus, RunnerKind, SmokeStatus
from vllm_cpu_build.files import sha256_of

__all__ = ["MEMBER", "SCHEMA", "SUFFIX", "BuildEnvInfo", "BuildInfo", "CheckVerdict", "Digest", "FloorCheck",
           "ModuleSize", "Platform", "ProvenanceError", "Record", "RunnerInfo", "RustFrontend", "SmokeSection",
           "Source", "Strip", "Torch", "VariantInfo", "VerifySection", "add_section", "beside", "dumps", "member_name",
           "parse", "sha256", "write_beside"]

SCHEMA = 1
MEMBER = "vllm_cpu_build.json"  # inside the .dist-info directory
SUFFIX = ".provenance.json"
sha256 = sha256_of  # the record names files by this digest (hex)


class ProvenanceError(ValueError):
    """A record that is not JSON or not a record; the message names the field."""


@dataclass(frozen=True)
class VariantInfo:
    isa_flags: dict[str, bool]
    pinned_cpuinfo_flags: list[str] | None  # what patch pinned (None: an unpinned tree)


@dataclass(frozen=True)
class Source:
    upstream_version: str
    release_line: str | None
    sdist: str | None = jsondoc.omitted_when_none()  # --sdist: the file the tree came from
    sdist_sha256: str | None = jsondoc.omitted_when_none()
    git_commit: str | None = jsondoc.omitted_when_none()  # a git checkout: HEAD
    git_tag: str | None = jsondoc.omitted_when_none()  # ... and the tag exactly at HEAD


@dataclass(frozen=True)
class RunnerInfo:
    """Where the build's commands ran: this host, or a build root."""

    kind: RunnerKind
    spec: str | None = jsondoc.omitted_when_none()  # --root as given
    dir: str | None = jsondoc.omitted_when_none()
    sha256: str | None = jsondoc.omitted_when_none()  # of a root tarball
    os: str | None = jsondoc.omitted_when_none()  # the root's PRETTY_NAME
    runner: str | None = jsondoc.omitted_when_none()  # bwrap


@dataclass(frozen=True)
class BuildEnvInfo:
    kind: BuildEnvKind
    key: str | None = jsondoc.omitted_when_none()  # the managed venv's cache key
    packages: dict[str, str] | None = jsondoc.omitted_when_none()  # name -> version in it
    torch_index: str | None = jsondoc.omitted_when_none()  # where its torch came from


@dataclass(frozen=True)
class BuildInfo:
    env: dict[str, str]  # the variant's environment (ISA switches ...), without MAX_JOBS and CCACHE_*
    cmake_args: list[str]
    fetchcontent: dict[str, str]  # FetchContent name -> local source directory
    python: str  # "3.X"
    compiler: str
    root: RunnerInfo
    build_env: BuildEnvInfo


@dataclass(frozen=True)
class Torch:
    pin: str | None  # the torch requirement the wheel carries (None: it needs no torch)
    built_against: str | None  # the torch installed where it compiled
    matches: bool


@dataclass(frozen=True)
class Platform:
    policy: str  # variants.json manylinux_policy
    needed: str  # what auditwheel says the binaries need
    tag: str  # the tag given


@dataclass(frozen=True)
class ModuleSize:
    before: int
    after: int


@dataclass(frozen=True)
class Strip:
    enabled: bool
    modules: dict[str, ModuleSize] = field(default_factory=dict)
    debug_archive: str | None = jsondoc.omitted_when_none()  # <wheel>.debug.tar.gz beside the wheel


@dataclass(frozen=True)
class RustFrontend:
    modules: list[str]  # empty: upstream's optional cargo build failed


@dataclass(frozen=True)
class CheckVerdict:
    ok: bool
    detail: str


@dataclass(frozen=True)
class VerifySection:
    ok: bool
    summary: str
    policy: str
    checks: dict[str, CheckVerdict]
    isa: dict[str, dict[str, int]]  # module -> feature -> instructions (non-zero only)


@dataclass(frozen=True)
class FloorCheck:
    """The smoke's probe on the package's floor CPU (a QEMU model, or "native")."""

    status: FloorStatus
    cpu: str
    reason: str
    seconds: float = 0.0


@dataclass(frozen=True)
class SmokeSection:
    status: SmokeStatus
    reason: str
    seconds: float
    floor: FloorCheck | None = jsondoc.omitted_when_none()


@dataclass(frozen=True)
class Digest:
    """What a build page and the release notes show of a record (a small build property)."""

    torch: str | None
    torch_matches: bool
    platform: str | None
    compiler: str
    source_date_epoch: int | None = jsondoc.omitted_when_none()
    rebuild_sha256: str | None = jsondoc.omitted_when_none()  # set by the master's reproduce check

    def to_json(self) -> dict[str, Any]:
        return dict(jsondoc.dump(self))

    @classmethod
    def from_json(cls, doc: object, where: str = "provenance digest") -> Digest:
        return jsondoc.load(cls, doc, where, ProvenanceError)


@dataclass(frozen=True)
class Record:
    package: str
    version: str
    arch: Arch
    variant: VariantInfo
    source: Source
    build: BuildInfo
    torch: Torch
    platform: Platform | None = jsondoc.omitted_when_none()  # every written record has it
    strip: Strip | None = jsondoc.omitted_when_none()  # every written record has it
    rust_frontend: RustFrontend | None = jsondoc.omitted_when_none()
    # The build's SOURCE_DATE_EPOCH (reproducible.py): a rebuild with it gives the same bytes. None: none
    # was known (an sdist tree without --source-date-epoch), so the binaries may hold the build's time.
    source_date_epoch: int | None = jsondoc.omitted_when_none()
    schema: int = SCHEMA
    # Beside the wheel only: the wheel it describes, and what later steps added.
    wheel: str | None = jsondoc.omitted_when_none()
    sha256: str | None = jsondoc.omitted_when_none()
    warnings: list[str] | None = jsondoc.omitted_when_none()
    verify: VerifySection | None = jsondoc.omitted_when_none()
    smoke: SmokeSection | None = jsondoc.omitted_when_none()
    # The sha256 of the wheel rebuilt from the same tag on another worker (a release with
    # [build] reproduce = true); the master writes it after comparing, equal to ``sha256`` or nothing published.
    rebuild_sha256: str | None = jsondoc.omitted_when_none()

    def to_json(self) -> dict[str, Any]:
        return dict(jsondoc.dump(self))

    @classmethod
    def from_json(cls, doc: object, where: str = "record") -> Record:
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ProvenanceError(f"{where}: not a schema {SCHEMA} vllm-cpu-build record")
        return jsondoc.load(cls, doc, where, ProvenanceError)

    def digest(self) -> Digest:
        return Digest(self.torch.built_against, self.torch.matches, self.platform.tag if self.platform else None,
                      self.build.compiler, self.source_date_epoch, self.rebuild_sha256)

    def summary(self) -> str:
        """One line for a build page: torch, compiler, root, tag, size."""
        parts = []
        if self.torch.pin:
            ok = "" if self.torch.matches else " MISMATCH"
            parts.append(f"torch {self.torch.built_against} (pin {self.torch.pin}{ok})")
        if self.build.compiler:
            parts.append(self.build.compiler)
        if self.build.root.kind is RunnerKind.ROOT:
            parts.append(f"root {self.build.root.os}")
        if self.platform:
            parts.append(self.platform.tag)
        mods = self.strip.modules if self.strip else {}
        if mods:
            before = sum(m.before for m in mods.values())
            after = sum(m.after for m in mods.values())
            parts.append(f"stripped {before / 1e6:.1f} -> {after / 1e6:.1f} MB")
        return "; ".join(parts)


def beside(wheel: Path) -> Path:
    return wheel.with_name(wheel.name + SUFFIX)


def dumps(record: Record) -> str:
    return json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"


def parse(text: str, where: str) -> Record:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProvenanceError(f"{where}: not JSON: {exc}") from None
    return Record.from_json(doc, where)


def member_name(names: list[str]) -> str | None:
    """The record's member among a wheel's names (None: the wheel has none)."""
    found = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/" + MEMBER)]
    return found[0] if len(found) == 1 else None


def write_beside(wheel: Path, record: Record) -> Path:
    path = beside(wheel)
    path.write_text(dumps(dataclasses.replace(record, wheel=wheel.name, sha256=sha256(wheel))))
    return path


def add_section(wheel: Path, section: VerifySection | SmokeSection) -> Path | None:
    """Add ``section`` (verify's or smoke's) to the record beside ``wheel`` if there is one."""
    path = beside(wheel)
    if not path.is_file():
        return None
    record = parse(path.read_text(), str(path))
    name = "verify" if isinstance(section, VerifySection) else "smoke"
    if record.sha256 != sha256(wheel):
        record = dataclasses.replace(record, warnings=[*(record.warnings or []),
                                                       f"{name}: the wheel changed since build wrote this record"])
    if isinstance(section, VerifySection):
        record = dataclasses.replace(record, verify=section)
    else:
        record = dataclasses.replace(record, smoke=section)
    path.write_text(dumps(record))
    return path
