"""The worker -> master contract: one dataclass per subcommand result.

``vllm-cpu-build <sub> --json`` prints ``to_json()`` of one of these on
stdout (or an ``ErrorResult`` when it stopped); the master's Buildbot steps
read it back with ``parse_result`` and never parse prose.  Each document
carries its ``kind`` so a reader can tell what it got.  Stdlib only: the
master imports this module.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vllm_cpu_build.errors import EXIT_FAIL, EXIT_OK, EXIT_SKIPPED


class ResultError(ValueError):
    """A JSON document that is not the result it claims to be."""


def _build(cls: type, doc: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``doc``, nested dataclasses and lists of them included."""
    if not isinstance(doc, dict):
        raise ResultError(f"{where}: expected an object, got {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in doc:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ResultError(f"{where}: missing {f.name!r}")
            continue
        kwargs[f.name] = _value(hints[f.name], doc[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _value(hint: Any, val: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, val, where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(val, list):
            raise ResultError(f"{where}: expected a list")
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(val)]
    return val


class Result:
    """Base of every result: ``kind`` tag, ``to_json``/``from_json``, the exit code it means."""

    kind: ClassVar[str] = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, doc: dict) -> Any:
        if isinstance(doc, dict) and doc.get("kind") not in (None, cls.kind):
            raise ResultError(f"expected a {cls.kind} result, got {doc.get('kind')!r}")
        return _build(cls, {k: v for k, v in doc.items() if k != "kind"}, cls.kind)

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
    detail: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.code


# --------------------------------------------------------------------------- plan


@dataclass
class PlannedBuild:
    variant: str
    arch: str
    pythons: list[str]  # Pythons the wheel serves
    abi3: bool  # one cp38-abi3 wheel for every Python
    env: dict[str, str]
    build_pythons: list[str]  # Pythons that build it (the oldest one for abi3)
    wheel_glob: str


@dataclass
class SkippedBuild:
    variant: str
    arch: str | None
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
    arch: str
    version: str
    full_version: str
    release_line: str
    python_versions: list[str]
    changes: list[str]
    pinned_flags: list[str]
    env: dict[str, str]


# --------------------------------------------------------------------------- build


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
    torch: dict = field(default_factory=dict)  # pin, built_against, matches
    platform: dict = field(default_factory=dict)  # policy, needed, tag (what the binaries satisfy)
    strip: dict = field(default_factory=dict)  # modules: {name: {before, after}}, debug_archive
    build_env: dict = field(default_factory=dict)  # the managed venv (key, packages) or the given interpreter
    root: dict = field(default_factory=dict)  # where it ran: the host or a build root
    provenance: str = ""  # path of the record beside the wheel
    record: dict = field(default_factory=dict)  # that record (vllm_cpu_build/provenance.py)


# --------------------------------------------------------------------------- verify


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyResult(Result):
    kind: ClassVar[str] = "verify"
    wheel: str
    variant: str
    arch: str
    ok: bool
    summary: str  # one line: "all 7 checks passed; ..." or "FAILED x, y: ..."
    checks: list[Check] = field(default_factory=list)
    isa: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> feature -> instructions
    isa_summary: str = ""  # the contract's verdict in a few words, e.g. "AVX2 2053, no AVX-512"

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAIL


# --------------------------------------------------------------------------- smoke


@dataclass
class SmokeResult(Result):
    kind: ClassVar[str] = "smoke"
    status: str  # passed | failed | skipped
    reason: str
    vllm_version: str | None = None  # the installed wheel's version (never the "+cpu" one vLLM's check reads)
    platform: str | None = None
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"passed": EXIT_OK, "skipped": EXIT_SKIPPED}.get(self.status, EXIT_FAIL)


# --------------------------------------------------------------------------- upload


@dataclass
class UploadedFile:
    file: str
    url: str


@dataclass
class NotUploaded:
    file: str
    reason: str
    url: str = ""


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
    arches: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    latest: bool = False  # <short>-latest moves: the package's newest final release on the index
    pushed: list[PushedImage] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    status: str = ""  # pushed | dry_run | nothing_published (no wheel to build from: exit 3)
    reason: str = ""  # why nothing was published

    @property
    def exit_code(self) -> int:
        return EXIT_SKIPPED if self.status == "nothing_published" else EXIT_OK


RESULT_TYPES: dict[str, type[Result]] = {t.kind: t for t in (ErrorResult, PlanResult, PatchResult, BuildResult,
                                                            VerifyResult, SmokeResult, UploadResult, IsaResult,
                                                            ImageResult)}


def parse_result(stdout: str) -> Result | None:
    """The result a ``--json`` subcommand printed (its last JSON document on stdout), or None."""
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
            try:
                return RESULT_TYPES[doc["kind"]].from_json(doc)
            except ResultError:
                return None
    return None
