"""The provenance record of a wheel: what it was built from, with what, and what the checks said.

One small JSON document per wheel, in two places:

* inside the wheel, ``<name>-<version>.dist-info/vllm_cpu_build.json``
  (listed in RECORD), written by ``build``: it travels with the wheel to the
  index, so anyone holding the wheel can read how it was made
  (``importlib.metadata.distribution("vllm-cpu").read_text("vllm_cpu_build.json")``);
* beside the wheel, ``<wheel>.provenance.json``: the same plus the wheel's
  sha256, and the sections later steps add (``verify``: every check and the
  ISA counts per module; ``smoke``).  The Buildbot steps show it on the build
  page.

Fields (schema 1): ``package``, ``version``, ``arch``, ``variant`` (ISA flags,
pinned cpuinfo flags), ``source`` (upstream version, sdist and sha256 or git
tag and commit), ``build`` (ISA switches and other environment, CMake
arguments, FetchContent sources, Python, compiler, build root, build env
packages), ``torch`` (the wheel's pin, the torch built against, whether they
match), ``platform`` (policy, what the binaries need, the tag given),
``strip`` (bytes per module before/after).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from vllm_cpu_build.index import sha256_of as sha256  # noqa: F401 - provenance.sha256, used by build and tests

SCHEMA = 1
MEMBER = "vllm_cpu_build.json"  # inside the .dist-info directory
SUFFIX = ".provenance.json"


class ProvenanceError(ValueError):
    """A record that is not JSON or not a record."""


def beside(wheel: Path) -> Path:
    return wheel.with_name(wheel.name + SUFFIX)


def dumps(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def parse(text: str, where: str) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProvenanceError(f"{where}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ProvenanceError(f"{where}: not a schema {SCHEMA} vllm-cpu-build record")
    return doc


def member_name(names: list[str]) -> str | None:
    """The record's member among a wheel's names (None: the wheel has none)."""
    found = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/" + MEMBER)]
    return found[0] if len(found) == 1 else None


def read_embedded(wheel: Path) -> dict | None:
    """The record inside ``wheel`` (None when it carries none)."""
    with zipfile.ZipFile(wheel) as zf:
        name = member_name(zf.namelist())
        if name is None:
            return None
        return parse(zf.read(name).decode(), f"{wheel.name}:{name}")


def read_beside(wheel: Path) -> dict | None:
    path = beside(wheel)
    return parse(path.read_text(), str(path)) if path.is_file() else None


def write_beside(wheel: Path, record: dict) -> Path:
    path = beside(wheel)
    doc = dict(record)
    doc["wheel"] = wheel.name
    doc["sha256"] = sha256(wheel)
    path.write_text(dumps(doc))
    return path


def add_section(wheel: Path, name: str, section: dict) -> Path | None:
    """Add ``section`` to the record beside ``wheel`` if there is one (verify, smoke)."""
    path = beside(wheel)
    if not path.is_file():
        return None
    doc = parse(path.read_text(), str(path))
    if doc.get("sha256") != sha256(wheel):
        doc.setdefault("warnings", []).append(f"{name}: the wheel changed since build wrote this record")
    doc[name] = section
    path.write_text(dumps(doc))
    return path


def summary(record: dict) -> str:
    """One line for a build page: torch, compiler, tag, size."""
    parts = []
    torch = record.get("torch") or {}
    if torch.get("pin"):
        ok = "" if torch.get("matches") else " MISMATCH"
        parts.append(f"torch {torch.get('built_against')} (pin {torch.get('pin')}{ok})")
    build = record.get("build") or {}
    if build.get("compiler"):
        parts.append(build["compiler"])
    root = (build.get("root") or {})
    if root.get("kind") == "root":
        parts.append(f"root {root.get('os')}")
    plat = record.get("platform") or {}
    if plat.get("tag"):
        parts.append(plat["tag"])
    strip = record.get("strip") or {}
    mods = strip.get("modules") or {}
    if mods:
        before = sum(m["before"] for m in mods.values())
        after = sum(m["after"] for m in mods.values())
        parts.append(f"stripped {before / 1e6:.1f} -> {after / 1e6:.1f} MB")
    return "; ".join(parts)
