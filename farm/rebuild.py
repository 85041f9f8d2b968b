"""Reproducible wheels: the master's check of a rebuilt wheel against the one the build recorded.

With ``[build] reproduce = true`` every variant build has its wheels built
once more (a fresh directory, ccache off, on another worker of the arch
when one is free).  The rebuilt wheels travel to the master like any
build's (``farm.handover``); here the master hashes exactly the bytes it
received and compares them with the sha256 the first build recorded, the
one ``upload`` later holds the published bytes to.  When they differ it
runs ``vllm-cpu-build compare`` from its own toolchain (never the copy
shipped to workers) on the first build's wheel, if the master holds it, and
the rebuilt one: which members differ and, for ELF files, which sections.

Plain Python (no Buildbot): the step is ``steps.reproduce.CompareRebuilt``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm.handover import MASTER_TOOLCHAIN
from vllm_cpu_build.files import sha256_of
from vllm_cpu_build.results import CompareResult, ErrorResult, ResultError, parse_result

COMPARE_TIMEOUT = 1800  # seconds: two multi-GB wheels unpacked and their ELF sections hashed


@dataclass(frozen=True)
class Difference:
    member: str  # path inside the wheel
    kind: str  # what differs (the compare command's word: content, missing, mode, ...)
    sections: list[str] = field(default_factory=list)  # ELF sections (or zip fields) that differ


@dataclass(frozen=True)
class Outcome:
    """One wheel: the first build's sha256 (``a``), the rebuild's (``b``), and what differs."""

    wheel: str
    identical: bool
    a: str
    b: str  # "" = the rebuild made no wheel of that name
    differences: list[Difference] = field(default_factory=list)
    note: str = ""  # why the member-level report is missing or short

    def to_json(self) -> dict[str, Any]:
        return {"wheel": self.wheel, "identical": self.identical, "sha256": {"a": self.a, "b": self.b},
                "differences": [asdict(d) for d in self.differences], **({"note": self.note} if self.note else {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Outcome:
        """Back from ``to_json`` (a build property); missing parts read as empty."""
        sha = doc.get("sha256") if isinstance(doc.get("sha256"), dict) else {}
        diffs = [Difference(str(d.get("member", "?")), str(d.get("kind", "")),
                            [str(s) for s in d.get("sections") or []])
                 for d in doc.get("differences") or [] if isinstance(d, dict)]
        return cls(str(doc.get("wheel", "?")), bool(doc.get("identical")), str(sha.get("a", "")), str(sha.get("b", "")),
                   diffs, str(doc.get("note", "")))

    def line(self) -> str:
        """``<wheel>: same bytes (sha256 ...)`` or ``<wheel>: NOT reproducible: ...; differs: member (sections)``."""
        if self.identical:
            return f"{self.wheel}: same bytes (sha256 {self.a})"
        if not self.b:
            return f"{self.wheel}: NOT reproducible: {self.note}"
        text = f"{self.wheel}: NOT reproducible: built sha256 {self.a}, rebuilt sha256 {self.b}"
        if self.differences:
            text += "; differs: " + ", ".join(
                d.member + (f" ({', '.join(d.sections)})" if d.sections else f" ({d.kind})") for d in self.differences)
        if self.note:
            text += f"; {self.note}"
        return text


def compare_command(a: Path, b: Path, python: str = sys.executable) -> list[str]:
    """``vllm-cpu-build compare A B --json`` from the master's own toolchain, isolated (``-I``)."""
    boot = (f"import sys; sys.path.insert(0, {str(MASTER_TOOLCHAIN)!r}); "
            "from vllm_cpu_build.cli import main; sys.exit(main(sys.argv[1:]))")
    return [python, "-I", "-c", boot, "compare", str(a), str(b), "--json"]


def parse_report(text: str) -> tuple[list[Difference], str]:
    """The compare command's differences (its typed result), or [] and why they could not be read."""
    try:
        res = parse_result(text)
    except ResultError as exc:
        return [], f"the compare command's report is malformed: {exc}"
    if isinstance(res, ErrorResult):
        return [], f"compare: {res.error}"
    if not isinstance(res, CompareResult):
        return [], "the compare command printed no report"
    out = [Difference(d.member or "(the archive)", str(d.kind), list(d.sections) or [str(d.kind), *d.fields])
           for d in res.differences]
    return out, "" if out else "the compare command found no differing member"


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMPARE_TIMEOUT, check=False)


def check(expected: dict[str, str], rebuilt_dir: Path, original_dir: Path | None,
          run: Runner = _run, log: Callable[[str], None] = lambda _m: None) -> list[Outcome]:
    """Each wheel the first build recorded (``expected``: name -> sha256) against its rebuild in ``rebuilt_dir``.

    ``original_dir`` holds the first build's wheels on the master when they
    were handed over (not in a dry run): only then can ``compare`` say
    which members differ.  ``log`` gets the compare command and its output.
    """
    out = []
    for name, sha in sorted(expected.items()):
        path = rebuilt_dir / name
        if not path.is_file():
            out.append(Outcome(name, False, sha, "", note="the rebuild made no wheel of this name"))
            continue
        got = sha256_of(path)
        if got == sha:
            out.append(Outcome(name, True, sha, got))
            continue
        original = original_dir / name if original_dir is not None else None
        if original is None or not original.is_file():
            out.append(Outcome(name, False, sha, got, note="the first build's wheel is not on the master "
                                                           "(dry run or skip upload): sha256 only"))
            continue
        argv = compare_command(original, path)
        log("$ " + " ".join(argv[:2] + ["...", *argv[4:]]) + "\n")
        try:
            proc = run(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            out.append(Outcome(name, False, sha, got, note=f"compare did not run: {exc}"))
            continue
        log(proc.stdout + proc.stderr + f"(exit {proc.returncode})\n")
        diffs, why = parse_report(proc.stdout)
        out.append(Outcome(name, False, sha, got, diffs, why))
    return out


__all__ = ["COMPARE_TIMEOUT", "Difference", "Outcome", "check", "compare_command", "parse_report"]
