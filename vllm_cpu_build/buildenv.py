"""The build environment of one release: upstream's own build requirements, checked.

``build`` compiles with ``--no-build-isolation`` (CMake must find the very
torch the wheel will run with), so the interpreter needs everything upstream
builds against.  This module derives that from the tree itself, for the
target arch and Python:

* what to install: ``[build-system] requires`` + ``requirements/cpu-build.txt``
  (cmake, ninja, jinja2, regex, setuptools-rust ...), with torch replaced by
  the torch **the wheel will pin** (``requirements/cpu.txt``; 0.11.2 x86_64:
  ``torch==2.8.0+cpu``), fetched from the torch index (setting/option, default
  the PyTorch CPU index; pip's own configuration applies on top);
* a venv holding exactly that, cached per requirement set, Python and build
  root (``$VLLM_CPU_CACHE/build-envs``, default ``~/.cache/vllm-cpu-buildbot``),
  created under a lock so parallel builds share it;
* checks before compiling: the venv's torch satisfies the wheel's pin, and the
  system has what the release needs (``numa.h`` when csrc/cpu includes it, a
  compiler the release's cmake accepts, Rust for ``setuptools-rust``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from vllm_cpu_build import reqfiles
from vllm_cpu_build.buildroot import Runner

# Upstream's cmake refuses (FATAL_ERROR, 0.17+) or silently degrades (WARNING,
# < 0.17) below these; both messages say "requires gcc/g++ >= X".
_GCC_GATE = re.compile(r'message\(\s*(FATAL_ERROR|WARNING)\s+"([^"]*)requires gcc/g\+\+\s*>=\s*([0-9]+(?:\.[0-9]+)*)"')
_NUMA = re.compile(r"^\s*#\s*include\s*[<\"]numa\.h[>\"]", re.M)
CPU_CMAKE = "cmake/cpu_extension.cmake"


class EnvError(Exception):
    """The build environment cannot be made or is not what the release needs (exit 2)."""


def cache_root() -> Path:
    root = os.environ.get("VLLM_CPU_CACHE") or Path.home() / ".cache" / "vllm-cpu-buildbot"
    return Path(root)


# --- what the release needs ---------------------------------------------------


@dataclass
class Needs:
    """What a tree needs to build for one target."""

    requirements: list[str]  # what the build venv gets, torch included
    torch_pin: str | None  # the torch requirement the wheel will carry (None: it needs no torch)
    torch_install: str | None  # the torch requirement installed (the pin, or a test override)
    sources: list[str]  # files the lists came from
    upstream_indexes: list[str]  # index options upstream wrote (informational)
    rust: bool  # setuptools-rust among the build requirements
    numa: bool  # csrc/cpu includes numa.h
    gcc_fatal: Version | None  # cmake stops below this GCC (x86_64)
    gcc_silent: Version | None  # cmake silently drops ISA flags below this GCC

    def as_json(self) -> dict[str, Any]:
        return {"requirements": self.requirements, "torch_pin": self.torch_pin, "torch_install": self.torch_install,
                "sources": self.sources, "rust": self.rust, "numa": self.numa,
                "gcc_fatal": str(self.gcc_fatal) if self.gcc_fatal else None,
                "gcc_silent": str(self.gcc_silent) if self.gcc_silent else None}


def gcc_gates(cmake_text: str, arch: str) -> tuple[Version | None, Version | None]:
    """(fatal, silent) minimum GCC of a cpu_extension.cmake for ``arch``."""
    fatal: list[Version] = []
    silent: list[Version] = []
    for kind, text, ver in _GCC_GATE.findall(cmake_text):
        if text.strip().upper().startswith("X86") and arch != "x86_64":
            continue
        (fatal if kind == "FATAL_ERROR" else silent).append(Version(ver))
    return (max(fatal) if fatal else None, max(silent) if silent else None)


def needs(src: Path, arch: str, python: str, torch_override: str | None = None) -> Needs:
    """What ``src`` needs to build for ``arch`` with CPython ``python`` ("3.11")."""
    target = reqfiles.Target(arch, python)
    try:
        lists = [reqfiles.build_system_requires(src, target)]
        cpu_build = src / "requirements" / "cpu-build.txt"
        if cpu_build.is_file():
            lists.append(reqfiles.read_file(cpu_build, target, src))
        runtime = src / "requirements" / "cpu.txt"
        pin_list = reqfiles.read_file(runtime, target, src) if runtime.is_file() else None
    except reqfiles.RequirementsError as exc:
        raise EnvError(str(exc)) from None
    pin = pin_list.get("torch") if pin_list else None
    if pin is None:  # no runtime list: a torch in the build lists is what it compiles against
        built = reqfiles.merge(*lists)
        pin = next((r for r in built if r.name.lower() == "torch"), None) if pin_list is None else None
    reqs = [str(r) for r in reqfiles.merge(*lists, drop=("torch",))]
    install = None
    if torch_override:
        try:
            override = Requirement(torch_override)
        except Exception as exc:
            raise EnvError(f"--torch {torch_override!r}: not a requirement ({exc})") from None
        if override.name.lower() != "torch":
            raise EnvError(f"--torch {torch_override!r}: must name torch")
        install = str(override)
    elif pin is not None:
        install = str(pin)
    if install:
        reqs.append(install)
    cmake = src / CPU_CMAKE
    fatal, silent = gcc_gates(cmake.read_text() if cmake.is_file() else "", arch)
    csrc = src / "csrc" / "cpu"
    numa = csrc.is_dir() and any(_NUMA.search(p.read_text(errors="replace"))
                                 for p in csrc.rglob("*") if p.suffix in (".cpp", ".hpp", ".h", ".c", ".cc"))
    names = {r.split(";")[0].strip() for r in reqs}
    rust = any(re.match(r"setuptools[-_.]rust\b", n, re.I) for n in names)
    idx = sorted({u for lst in lists + ([pin_list] if pin_list else []) for u in lst.index_urls})
    sources = [s for lst in lists + ([pin_list] if pin_list else []) for s in lst.sources]
    return Needs(reqs, str(pin) if pin else None, install, sources, idx, rust, numa, fatal, silent)


def torch_problem(pin: str | None, installed: str | None, arch: str) -> str | None:
    """Why the build environment's torch is not the one the wheel pins (None = it is)."""
    if pin is None:
        return None
    req = Requirement(pin)
    if installed is None:
        return f"the wheel will pin {req} for {arch}, the build environment has no torch"
    try:
        ok = req.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        ok = False
    if ok:
        return None
    return f"the wheel will pin {req} for {arch}, the build environment has torch {installed}"


# --- the venv -----------------------------------------------------------------


@dataclass
class BuildVenv:
    python: str  # its interpreter (same path inside a build root)
    path: Path
    key: str
    created: bool
    seconds: float
    packages: dict[str, str] = field(default_factory=dict)  # name -> version (pip freeze)

    def as_json(self) -> dict[str, Any]:
        return {"python": self.python, "path": str(self.path), "key": self.key, "created": self.created,
                "seconds": round(self.seconds, 1), "packages": self.packages}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pip_errors(output: str, limit: int = 3000) -> str:
    """The part of pip's output that says why: ERROR lines and the resolver's explanation.

    pip prints the explanation ("The conflict is caused by: ...") on stdout and
    the ERROR lines on stderr: pass both.
    """
    lines = output.splitlines()
    keep: list[str] = []
    in_block = False
    for ln in lines:
        s = ln.strip()
        if s.startswith("ERROR:") or "conflict is caused by" in s or "ResolutionImpossible" in s:
            keep.append(s)
            in_block = "conflict is caused by" in s
        elif in_block and s:
            keep.append("  " + s)
        elif in_block:
            in_block = False
    text = "\n".join(keep) if keep else "\n".join(ln for ln in lines[-15:] if ln.strip())
    return text[-limit:]


def venv_key(python_id: str, reqs: list[str], torch_index: str, root_key: str) -> str:
    doc = json.dumps({"python": python_id, "requirements": sorted(reqs), "torch_index": torch_index,
                      "root": root_key}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def ensure_venv(n: Needs, base_python: str, runner: Runner, *, torch_index: str = "",
                log: TextIO | None = None) -> BuildVenv:
    """The cached venv for ``n`` made from ``base_python`` (run through ``runner``); creates it once."""
    start = time.monotonic()
    probe = runner.run([base_python, "-c", "import sys, platform; print(sys.version.split()[0], "
                                           "platform.machine(), sys.implementation.name)"])
    if probe.returncode != 0:
        raise EnvError(f"{base_python}: cannot run it in {runner.label}: {probe.stderr.strip()[-500:]}")
    pyid = probe.stdout.strip()
    key = venv_key(pyid, n.requirements, torch_index if n.torch_install else "", runner.key)
    path = cache_root() / "build-envs" / f"py{'.'.join(pyid.split()[0].split('.')[:2])}-{key}"
    ok = path / "vllm-cpu-build-env.json"
    python = str(path / "bin" / "python")
    runner.expose(path.parent)
    with _locked(path.parent / f"{path.name}.lock"):
        if ok.is_file():
            meta = json.loads(ok.read_text())
            return BuildVenv(python, path, key, False, time.monotonic() - start, meta.get("packages", {}))
        if path.exists():
            shutil.rmtree(path)
        say = log.write if log else (lambda _t: None)
        say(f"  build env: creating {path} ({runner.label}, Python {pyid.split()[0]})\n")
        r = runner.run([base_python, "-m", "venv", str(path)])
        if r.returncode != 0:
            raise EnvError(f"python -m venv {path} failed in {runner.label}: {r.stderr.strip()[-1000:]}")
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
        if n.torch_install and torch_index:
            cmd += ["--extra-index-url", torch_index]
        cmd += n.requirements
        say("  build env: $ " + " ".join(cmd) + "\n")
        r = runner.run(cmd)
        if r.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            where = f"the torch index {torch_index} and pip's configured indexes" \
                if torch_index and n.torch_install else "pip's configured indexes"
            why = pip_errors(r.stdout + "\n" + r.stderr)
            raise EnvError(f"cannot install the build requirements ({where}): {why}")
        fr = runner.run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"])
        packages = {p["name"]: p["version"] for p in json.loads(fr.stdout or "[]")} if fr.returncode == 0 else {}
        ok.write_text(json.dumps({"requirements": n.requirements, "torch_index": torch_index, "python": pyid,
                                  "packages": packages}, indent=2) + "\n")
        return BuildVenv(python, path, key, True, time.monotonic() - start, packages)


def installed_version(python: str, dist: str, runner: Runner) -> str | None:
    """Version of ``dist`` installed for ``python`` (None if absent)."""
    code = ("import importlib.metadata as m, sys\n"
            "try: print(m.version(sys.argv[1]))\n"
            "except m.PackageNotFoundError: pass")
    r = runner.run([python, "-c", code, dist])
    return r.stdout.strip() or None if r.returncode == 0 else None


# --- system prerequisites -------------------------------------------------------


def system_problems(n: Needs, runner: Runner, env: dict[str, str], arch: str,
                    compiler_gnu: bool, compiler_version: Version | None, compiler: str) -> list[str]:
    """What the system lacks for this release, each naming the fix."""
    problems = []
    if n.gcc_fatal and arch == "x86_64" and not (compiler_gnu and compiler_version and
                                                 compiler_version >= n.gcc_fatal):
        problems.append(f"this vLLM's {CPU_CMAKE} requires GCC >= {n.gcc_fatal} for x86_64, the C++ compiler is "
                        f"{compiler} (install gcc-14/g++-14 and set CC/CXX, or build in a build root that has it)")
    if n.numa:
        cxx = env.get("CXX") or "c++"
        r = runner.run(["sh", "-c", f'printf "#include <numa.h>\\n" | "{cxx}" -x c++ -E - >/dev/null'], env=env)
        if r.returncode != 0:
            problems.append("numa.h not found (csrc/cpu includes it): install libnuma-dev "
                            "(Debian/Ubuntu) or numactl-devel (RHEL/manylinux)")
    if n.rust:
        r = runner.run(["sh", "-c", "command -v cargo && command -v rustc"], env=env)
        if r.returncode != 0:
            problems.append("setuptools-rust is a build requirement but cargo/rustc are not on PATH "
                            "(install rustc and cargo, or rustup)")
    return problems
