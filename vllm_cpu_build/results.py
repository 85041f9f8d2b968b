"""The worker -> master contract: one dataclass per subcommand result.

``vllm-cpu-build <sub> --json`` prints ``to_json()`` of one of these on
stdout (or an ``ErrorResult`` when it stopped); the master's Buildbot steps
read it back with ``parse_result`` and never parse prose.  Each document
carries its ``kind`` so a reader can tell what it got.  Stdlib only: the
master imports this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from vllm_cpu_build import jsondoc
from vllm_cpu_build.enums import Arch, CheckName, DiffKind, ImageStatus, SmokeStatus
from vllm_cpu_build.errors import EXIT_FAIL, EXIT_OK, EXIT_SKIPPED
from vllm_cpu_build.provenance import FloorCheck, Platform, Record, RunnerInfo, Strip, Torch

R = TypeVar("R", bound="Result")


class ResultError(ValueError):
    """A JSON document that is not the result it claims to be; the message names the field."""


class Result:
    """Base of every result: ``kind`` tag, ``to_json``/``from_json``, the exit code it means."""

    kind: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **jsondoc.dump(self)}

    @classmethod
    def from_json(cls: type[R], doc: object) -> R:
        if not isinstance(doc, dict):
            raise ResultError(f"{cls.kind}: expected an object, got {type(doc).__name__}")
        if doc.get("kind") not in (None, cls.kind):
            raise ResultError(f"expected a {cls.kind} result, got {doc.get('kind')!r}")
        return jsondoc.load(cls, {k: v for k, v in doc.items() if k != "kind"}, cls.kind, ResultError)

    @property
    def exit_code(self) -> int:
        return EXIT_OK


@dataclass
class ErrorResult(Result):
    """What any subcommand prints with ``--json`` when it stopped (exit 1 or 2)."""

    kind: ClassVar[str] = "error"
    command: str
    error: str
    code: int = EXIT_FAIL
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.code


# --------------------------------------------------------------------------- plan


@dataclass
class PlannedWheel:
    python: str  # the Python that builds it
    serves: list[str]  # the Pythons it installs on
    tag: str  # its Python and ABI tags: cp311-abi3, cp310-cp310
    wheel_glob: str


@dataclass
class PlannedBuild:
    variant: str
    arch: Arch
    pythons: list[str]  # Pythons the build's wheels serve
    abi3: bool  # one stable-ABI wheel (cpXY-abi3, XY = abi3_floor) for every Python
    env: dict[str, str]
    build_pythons: list[str]  # one compile each: the Python of each wheel
    wheel_glob: str  # every wheel of the build
    # Pythons from this one on share one cpXY-abi3 wheel, older ones get a wheel each (abi3.stable_abi).
    abi3_floor: str = "3.8"
    wheels: list[PlannedWheel] = field(default_factory=list)


@dataclass
class SkippedBuild:
    variant: str
    arch: Arch | None
    reason: str


@dataclass
class PlanResult(Result):
    kind: ClassVar[str] = "plan"
    version: str
    full_version: str
    release_line: str
    requires_python: str
    pythons: list[str]
    builds: list[PlannedBuild] = field(default_factory=list)
    skipped: list[SkippedBuild] = field(default_factory=list)


# --------------------------------------------------------------------------- patch


@dataclass
class PatchResult(Result):
    kind: ClassVar[str] = "patch"
    variant: str
    arch: Arch
    version: str
    full_version: str
    release_line: str
    python_versions: list[str]
    changes: list[str]
    pinned_flags: list[str]
    env: dict[str, str]


# --------------------------------------------------------------------------- build


@dataclass
class CompileCache:
    """What ccache gave one build (its own stats log: ``vllm_cpu_build.compile_cache``)."""

    calls: int  # cacheable compiler calls
    hits: int  # served from the cache, local or remote
    misses: int  # compiled
    remote: str = ""  # the remote storage, password redacted; "" = local only
    remote_hits: int = 0  # hits the remote served (a fresh worker's hits)
    remote_misses: int = 0
    remote_errors: int = 0  # the remote was down, refused or full: compiled (and stored) locally instead
    remote_timeouts: int = 0

    @property
    def remote_failed(self) -> bool:
        return bool(self.remote and (self.remote_errors or self.remote_timeouts))

    def summary(self) -> str:
        """``ccache 40/50 hits (30 remote)``; a failed remote says so: the build was only slower."""
        text = f"ccache {self.hits}/{self.calls} hits"
        if self.remote and not self.remote_failed:
            text += f" ({self.remote_hits} remote)"
        if self.remote_failed:
            text += (f"; remote cache FAILED ({self.remote_errors} error(s), {self.remote_timeouts} timeout(s)): "
                     "compiled without it, slower")
        return text


@dataclass
class BuildResult(Result):
    kind: ClassVar[str] = "build"
    wheel: str
    abi3: bool
    abi3_reason: str
    seconds: float
    env: dict[str, str]
    tags: list[str]
    command: list[str]
    python: str
    compiler: str
    # The parts of the record a reader wants first (vllm_cpu_build/provenance.py types them).
    torch: Torch | None = None  # pin, built_against, matches
    platform: Platform | None = None  # policy, needed, tag (what the binaries satisfy)
    strip: Strip | None = None  # modules: {name: {before, after}}, debug_archive
    build_env: dict[str, Any] = field(default_factory=dict)  # the managed venv (key, packages) or the interpreter
    root: RunnerInfo | None = None  # where it ran: the host or a build root
    provenance: str = ""  # path of the record beside the wheel
    record: Record | None = None  # that record
    sha256: str = ""  # of the wheel as build finished it: the bytes verify, smoke and the publisher must see
    compile_cache: CompileCache | None = None  # ccache's counters for this build; None without ccache


# --------------------------------------------------------------------------- verify


@dataclass
class Check:
    name: CheckName
    ok: bool
    detail: str


@dataclass
class VerifyResult(Result):
    kind: ClassVar[str] = "verify"
    wheel: str
    variant: str
    arch: Arch
    ok: bool
    summary: str  # one line: "all 7 checks passed; ..." or "FAILED x, y: ..."
    checks: list[Check] = field(default_factory=list)
    isa: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> feature -> instructions
    isa_summary: str = ""  # the contract's verdict in a few words, e.g. "AVX2 2053, no AVX-512"

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r} in this result (it has {', '.join(c.name for c in self.checks)})")

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAIL


# --------------------------------------------------------------------------- smoke


@dataclass
class SmokeResult(Result):
    kind: ClassVar[str] = "smoke"
    status: SmokeStatus
    reason: str
    vllm_version: str | None = None  # the installed wheel's version (never the "+cpu" one vLLM's check reads)
    platform: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    # The same probe on the package's floor CPU (smoke.py); absent when the smoke was skipped.
    floor: FloorCheck | None = jsondoc.omitted_when_none()

    @property
    def exit_code(self) -> int:
        return {SmokeStatus.PASSED: EXIT_OK, SmokeStatus.SKIPPED: EXIT_SKIPPED}.get(self.status, EXIT_FAIL)


# --------------------------------------------------------------------------- upload


@dataclass
class UploadedFile:
    file: str
    url: str
    sha256: str = ""  # of the bytes verified and sent; the index listed the same after the upload


@dataclass
class NotUploaded:
    file: str
    reason: str
    url: str = ""
    sha256: str = ""  # already in the index: the sha256 both the index and this verified wheel have


@dataclass
class UploadResult(Result):
    kind: ClassVar[str] = "upload"
    variant: str
    repository_url: str
    dry_run: bool
    uploaded: list[UploadedFile] = field(default_factory=list)
    skipped: list[NotUploaded] = field(default_factory=list)  # already in the index, or dry run


# --------------------------------------------------------------------------- isa


@dataclass
class IsaFile:
    file: str
    member: str | None
    arch: str
    features: dict[str, int]
    instructions: int
    invalid: int
    exec_bytes: int
    note: str = ""


@dataclass
class IsaResult(Result):
    kind: ClassVar[str] = "isa"
    files: list[IsaFile] = field(default_factory=list)


# --------------------------------------------------------------------------- image


@dataclass
class PushedImage:
    ref: str  # repository:tag
    digest: str  # of the manifest list


@dataclass
class ImageResult(Result):
    kind: ClassVar[str] = "image"
    package: str
    short: str  # variants.json short name: the tag prefix
    requested: str  # the upstream version asked for
    version: str = ""  # the package version installed (with the highest .postN when asked)
    arches: list[Arch] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    latest: bool = False  # <short>-latest moves: the package's newest final release on the index
    wheels: dict[str, str] = field(default_factory=dict)  # arch -> the one wheel's URL with #sha256= (pinned)
    foreign: list[str] = field(default_factory=list)  # index files left out: not in the master's custody ledger
    pushed: list[PushedImage] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    status: ImageStatus = ImageStatus.PLANNED
    reason: str = ""  # why nothing was published

    @property
    def exit_code(self) -> int:
        return EXIT_SKIPPED if self.status is ImageStatus.NOTHING_PUBLISHED else EXIT_OK


# --------------------------------------------------------------------------- compare


@dataclass
class MemberDifference:
    member: str  # archive member name; "" for an archive-wide difference
    kind: DiffKind
    sections: list[str] = field(default_factory=list)  # ELF members: the sections (or headers) that differ
    fields: list[str] = field(default_factory=list)  # zip metadata that differs: mode, date_time, ...
    detail: str = ""  # one line for a reader: the first differing line of a text member, sizes


@dataclass
class CompareResult(Result):
    """Two wheels, byte for byte (exit 0 identical, 1 they differ)."""

    kind: ClassVar[str] = "compare"
    a: str
    b: str
    identical: bool
    sha256: dict[str, str]  # {"a": ..., "b": ...}
    differences: list[MemberDifference] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.identical else EXIT_FAIL


RESULT_TYPES: dict[str, type[Result]] = {t.kind: t for t in (ErrorResult, PlanResult, PatchResult, BuildResult,
                                                            VerifyResult, SmokeResult, UploadResult, IsaResult,
                                                            ImageResult, CompareResult)}


def parse_result(stdout: str) -> Result | None:
    """The result a ``--json`` subcommand printed: its last JSON document on stdout.

    None when stdout holds no result document (nothing, prose, JSON without a
    known ``kind``).  A document of a known kind that does not fit its type
    raises ResultError (naming the field): the caller decides what a
    malformed result means, it never reads as "no result".
    """
    text = (stdout or "").strip()
    if not text:
        return None
    candidates = [text]
    start = text.rfind("\n{")
    if start >= 0:  # tolerate stray lines before the document
        candidates.append(text[start + 1:])
    for candidate in candidates:
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("kind") in RESULT_TYPES:
            return RESULT_TYPES[doc["kind"]].from_json(doc)
    return None
