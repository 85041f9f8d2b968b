"""The tools a build runs: the interpreter, CMake and the C++ compiler, probed before anything compiles.

* the interpreter: ``--python`` as ``3.X`` (``python3.X`` on PATH), a path,
  or this one; inside a build root, the root's own;
* a no-isolation build interpreter (``--build-env interpreter``) must hold
  setuptools, setuptools-scm, wheel and a cmake >= 3.26;
* the C++ compiler CMake will pick (``$CXX`` or ``c++``): below GCC 12.3
  upstream (< 0.17) silently drops ``-mavx512vnni``/``-mavx512bf16``/``-mamx-*``
  with only a warning, so ``compiler_problem`` refuses such a build for the
  variants that need them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vllm_cpu_build.buildenv import CPU_CMAKE
from vllm_cpu_build.buildroot import Runner
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.variants import Variant

# Python modules the build interpreter needs (no build isolation); upstream's
# torch/ninja come on top for a real release, which the worker provides.
BUILD_MODULES = ("setuptools", "setuptools_scm", "wheel")
MIN_CMAKE = Version("3.26")
# Upstream (< 0.17) wraps -mavx512vnni/-mavx512bf16/-mamx-* in a compiler check
# and on failure only warns "... requires gcc/g++ >= 12.3" and builds without.
_SILENT_DROP = re.compile(r'message\(\s*WARNING\s+"[^"]*requires gcc/g\+\+\s*>=\s*([0-9]+(?:\.[0-9]+)*)"')
_PY_VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"


# --- interpreter -------------------------------------------------------------


def _py_version(python: str) -> str:
    out = subprocess.run([python, "-c", _PY_VERSION], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UsageError(f"{python}: cannot run it: {out.stderr.strip()}")
    return out.stdout.strip()


def find_interpreter(python: str | None) -> tuple[str, str]:
    """(path, "3.X") of the interpreter for ``python`` ("3.X", a path, or None = this one)."""
    this = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if python is None:
        return sys.executable, this
    if re.fullmatch(r"3\.\d+", python):
        if python == this:
            return sys.executable, python
        found = shutil.which(f"python{python}")
        if not found:
            raise UsageError(f"--python {python}: no python{python} on PATH")
        return found, _py_version(found)
    if not os.access(python, os.X_OK):
        raise UsageError(f"--python {python}: not 3.X and not an executable")
    return python, _py_version(python)


def interpreter(python: str | None, runner: Runner) -> tuple[str, str]:
    """(interpreter, "3.X") on the host, or inside the build root."""
    if not runner.in_root:
        return find_interpreter(python)
    exe = python or "python3"
    if re.fullmatch(r"3\.\d+", exe):
        exe = f"python{exe}"
    r = runner.run([exe, "-c", _PY_VERSION])
    if r.returncode != 0:
        raise UsageError(f"--python {exe}: cannot run it in {runner.label}: {(r.stderr or r.stdout).strip()[-300:]}")
    return exe, r.stdout.strip()


def tool_path(python: str) -> str:
    """PATH with the interpreter's bin directory first (pip-installed cmake, ccache shims)."""
    bindir = str(Path(python).parent)
    return os.pathsep.join([bindir, os.environ.get("PATH", "")])


def check_build_env(python: str, runner: Runner | None = None) -> list[str]:
    """Problems of ``python`` as a no-isolation build interpreter (empty = fine)."""
    runner = runner or Runner()
    problems = []
    code = ("import importlib.util,sys; "
            f"print(' '.join(m for m in {BUILD_MODULES!r} if importlib.util.find_spec(m) is None))")
    out = runner.run([python, "-c", code])
    missing = out.stdout.split()
    if out.returncode != 0 or missing:
        problems.append(f"{python} lacks {', '.join(missing) or out.stderr.strip()} (pip install "
                        f"{' '.join(m.replace('_', '-') for m in missing)})")
    env = dict(os.environ, PATH=tool_path(python))
    found = runner.run(["sh", "-c", "command -v cmake"], env=env)
    cmake = found.stdout.strip() if found.returncode == 0 else ""
    if not cmake:
        problems.append("no cmake on PATH (pip install 'cmake>=3.26')")
    else:
        m = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?)", runner.run([cmake, "--version"], env=env).stdout)
        if not m or Version(m.group(1)) < MIN_CMAKE:
            problems.append(f"{cmake} is {m.group(1) if m else 'unknown'}; need >= {MIN_CMAKE} "
                            "(pip install 'cmake>=3.26' into the build interpreter)")
    return problems


# --- compiler ----------------------------------------------------------------


@dataclass(frozen=True)
class Compiler:
    command: str
    gnu: bool
    version: Version | None

    def describe(self) -> str:
        return f"{self.command} ({'GNU' if self.gnu else 'not GNU'} {self.version or '?'})"


def probe_compiler(env: dict[str, str], runner: Runner | None = None) -> Compiler:
    """The C++ compiler CMake will pick (``$CXX`` or ``c++``), on the host or in the build root."""
    runner = runner or Runner()
    cxx = env.get("CXX") or "c++"
    try:
        verbose = runner.run([cxx, "-v"], env=env).stderr
        full = runner.run([cxx, "-dumpfullversion"], env=env).stdout.strip()
    except OSError:
        return Compiler(cxx, False, None)
    gnu = bool(re.search(r"^gcc version ", verbose, re.M))
    try:
        ver = Version(full) if full else None
    except InvalidVersion:
        ver = None
    return Compiler(cxx, gnu, ver)


def silent_drop_gate(cmake_text: str) -> Version | None:
    """Minimum GCC below which the tree's cmake silently drops VNNI/BF16/AMX, if it does."""
    found = [Version(v) for v in _SILENT_DROP.findall(cmake_text)]
    return max(found) if found else None


def compiler_problem(variant: Variant, arch: str, cmake_text: str, compiler: Compiler) -> str | None:
    """Why this compiler would build a wheel lacking the variant's ISA (None = fine).

    Only where the release degrades silently: from 0.17 upstream fails by itself.
    """
    gate = silent_drop_gate(cmake_text)
    f = variant.isa_flags
    if arch != Arch.X86_64 or gate is None or not (f["avx512vnni"] or f["avx512bf16"] or f["amxbf16"]):
        return None
    if compiler.gnu and compiler.version is not None and compiler.version >= gate:
        return None
    return (f"{variant.package} needs GCC >= {gate}, the C++ compiler is {compiler.describe()}: "
            f"this vLLM's {CPU_CMAKE} would silently build without VNNI/BF16/AMX (set CXX/CC to a newer GCC)")
