"""Read, extend and check ``workers/registry.toml``.

Each ``[[worker]]`` has name, arch, max_builds, admin and notes, and at
most one launch table (``[worker.ec2]`` or ``[worker.local]``,
``workers/launch.py``) when the master starts the host on demand.  Its
password never lives here: it is the secret file ``worker-<name>`` (mode
0600) in the master's secrets directory, read by Buildbot's SecretInAFile.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from vllm_cpu_build.files import Format, read_document
from vllm_cpu_build.variants import ARCHES
from workers import launch as launch_mod

DEFAULT_PATH = Path(__file__).resolve().parent / "registry.toml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_KEYS = {"name", "arch", "max_builds", "admin", "notes", "python", "build_root", *launch_mod.KINDS}


class RegistryError(ValueError):
    """The registry is malformed or an entry is invalid; the message names it."""


@dataclass(frozen=True)
class WorkerEntry:
    name: str
    arch: str
    max_builds: int
    admin: str
    notes: str = ""
    python: str = "python3"  # interpreter on the worker that runs the shipped toolchain
    build_root: str = ""  # worker-side build root (dir or tarball); "" = [build] root_<arch> of the settings
    launch: launch_mod.Launch | None = None  # how the master starts it on demand; None = always on

    @property
    def secret_name(self) -> str:
        return f"worker-{self.name}"


def _entry(i: int, raw: object) -> WorkerEntry:
    where = f"worker[{i}]"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for key in ("name", "arch", "admin"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise RegistryError(f"{where}.{key}: required, a non-empty string")
    name = raw["name"]
    if not _NAME.match(name):
        raise RegistryError(f"{where}.name: {name!r} must be lowercase letters, digits and '-'")
    if raw["arch"] not in ARCHES:
        raise RegistryError(f"worker {name}.arch: {raw['arch']!r}; known: {', '.join(ARCHES)}")
    mb = raw.get("max_builds", 1)
    if not isinstance(mb, int) or isinstance(mb, bool) or mb < 1:
        raise RegistryError(f"worker {name}.max_builds: must be a positive integer")
    root = raw.get("build_root", "")
    if not isinstance(root, str) or (root and not root.startswith("/")):
        raise RegistryError(f"worker {name}.build_root: an absolute path on the worker, got {root!r}")
    try:
        how = launch_mod.from_entry(f"worker {name}", raw)
    except launch_mod.LaunchError as exc:
        raise RegistryError(str(exc)) from None
    return WorkerEntry(name, raw["arch"], mb, raw["admin"], str(raw.get("notes", "")),
                       str(raw.get("python", "python3")), root, how)


def load(path: str | os.PathLike | None = None) -> list[WorkerEntry]:
    p = Path(path or DEFAULT_PATH)
    raw = read_document(p, Format.TOML, RegistryError, missing="worker registry not found")
    entries = [_entry(i, w) for i, w in enumerate(raw.get("worker", []))]
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise RegistryError(f"worker {e.name}: listed twice")
        seen.add(e.name)
    return entries


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def write_secret(secrets_dir: Path, name: str, value: str) -> Path:
    """Create ``secrets_dir/name`` with mode 0600 (SecretInAFile refuses anything else)."""
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)
    return path


def to_toml(e: WorkerEntry) -> str:
    """One ``[[worker]]`` block (and its launch table) as ``load`` reads it back."""
    block = (f"[[worker]]\nname = {_toml_str(e.name)}\narch = {_toml_str(e.arch)}\nmax_builds = {e.max_builds}\n"
             f"admin = {_toml_str(e.admin)}\nnotes = {_toml_str(e.notes)}\n")
    if e.python != "python3":
        block += f"python = {_toml_str(e.python)}\n"
    if e.build_root:
        block += f"build_root = {_toml_str(e.build_root)}\n"
    if e.launch is not None:
        block += launch_mod.to_toml(e.launch, _toml_str)
    return block


def add(path: Path, secrets_dir: Path, name: str, arch: str, admin: str, max_builds: int = 1,
        notes: str = "", password: str | None = None,
        launch: dict[str, dict[str, object]] | None = None) -> tuple[WorkerEntry, str]:
    """Append a worker to the registry and write its password secret; returns (entry, password).

    ``launch``: ``{"ec2": {...}}`` or ``{"local": {...}}``, the raw launch table (checked like the file's).
    """
    existing = load(path) if path.exists() else []
    entry = _entry(len(existing), {"name": name, "arch": arch, "admin": admin, "max_builds": max_builds,
                                   "notes": notes, **(launch or {})})
    if any(e.name == name for e in existing):
        raise RegistryError(f"worker {name}: already in {path}")
    password = password or secrets.token_urlsafe(24)
    block = to_toml(entry)
    text = path.read_text() if path.exists() else ""
    # Written beside, read back by the same reader, then renamed: the registry never holds a bad entry.
    part = path.with_name(path.name + ".part")
    part.write_text(text.rstrip("\n") + "\n\n" + block if text else block)
    try:
        if load(part)[-1] != entry:
            raise RegistryError(f"worker {name}: the new entry does not read back as written")
    except RegistryError:
        part.unlink()
        raise
    part.replace(path)
    write_secret(secrets_dir, entry.secret_name, password)
    return entry, password


def check(path: Path, secrets_dir: Path) -> list[str]:
    """Problems that would stop a worker from connecting (missing or unreadable secrets)."""
    problems = []
    for e in load(path):
        secret = secrets_dir / e.secret_name
        if not secret.is_file():
            problems.append(f"{e.name}: no password secret {secret}")
            continue
        mode = stat.S_IMODE(secret.stat().st_mode)
        if mode != 0o600:
            problems.append(f"{e.name}: {secret} has mode {oct(mode)}, SecretInAFile needs 0600")
        elif not secret.read_text().strip():
            problems.append(f"{e.name}: {secret} is empty")
    return problems
