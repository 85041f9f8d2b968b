"""Chain of custody: which files on the package index this farm built and verified.

The index is evidence, not truth.  A wheel counts as this farm's output
only when the custody ledger holds its file name with the very sha256 the
index lists: the ledger is written by the master (``steps.custody``, in
Buildbot's database, so every master of a cluster shares it) when an
``upload`` step reported that it verified and uploaded exactly those bytes
(or found exactly those bytes already there).  Every other wheel on the
index is *foreign*: never counted as published, never attached to a
GitHub release or used for an image, shown as such in the release matrix
and announced in the release mail.

Pure functions: the readers pass the ledger entries they looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vllm_cpu_build.index import IndexFile

# Names of files -> the sha256 the ledger holds for each (absent: never built here). Blocking.
Ledger = Callable[[list[str]], dict[str, str]]
FOREIGN_PROPERTY = "foreign"  # a release build's list of foreign files ({file, sha256, why})


@dataclass(frozen=True)
class Foreign:
    """A file the index lists that no build of this farm produced and verified."""

    file: str
    sha256: str  # what the index says ("" when it gives none)
    why: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256, "why": self.why}


def why_foreign(f: IndexFile, recorded: str | None) -> str | None:
    """Why ``f`` is not this farm's (None: it is); ``recorded`` is the ledger's sha256 for its name."""
    if not f.sha256:
        return "the index gives no sha256 for it, so it cannot be checked"
    if recorded is None:
        return "no build of this farm produced and verified it"
    if recorded != f.sha256:
        return f"this farm built and verified sha256 {recorded} under this name; the index holds another file"
    return None


def split(files: Iterable[IndexFile], ledger: Mapping[str, str]) -> tuple[list[IndexFile], list[Foreign]]:
    """(this farm's files, the foreign ones) of an index listing; yanked files are neither."""
    ours: list[IndexFile] = []
    foreign: list[Foreign] = []
    for f in files:
        if f.yanked:
            continue
        why = why_foreign(f, ledger.get(f.filename))
        if why is None:
            ours.append(f)
        else:
            foreign.append(Foreign(f.filename, f.sha256 or "", why))
    return ours, foreign


def trusted_lister(lister: Callable[[str, str], list[IndexFile]], ledger: Ledger,
                   foreign: list[Foreign]) -> Callable[[str, str], list[IndexFile]]:
    """``lister`` that keeps only this farm's files; appends the foreign ones it saw to ``foreign``."""

    def listed(url: str, project: str) -> list[IndexFile]:
        files = lister(url, project)
        ours, other = split(files, ledger([f.filename for f in files]))
        foreign.extend(x for x in other if x not in foreign)
        return ours

    return listed


def describe(f: Foreign) -> str:
    return f"{f.file} (sha256 {f.sha256 or 'unknown'}): {f.why}"


def from_property(value: Any) -> list[Foreign]:
    """The foreign files a build's ``foreign`` property lists (anything malformed is left out)."""
    out = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and isinstance(item.get("file"), str):
            out.append(Foreign(item["file"], str(item.get("sha256") or ""), str(item.get("why") or "")))
    return out


def mail_lines(value: Any) -> list[str]:
    """The release mail's section on foreign files (none: no lines)."""
    found = from_property(value)
    if not found:
        return []
    return ["FOREIGN FILES on the index (not built and verified by this farm; not counted as published, "
            "not attached, not used for images; remove or investigate them):",
            *[f"  - {describe(f)}" for f in found], ""]
