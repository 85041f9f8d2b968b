"""``vllm-cpu-build build``: build one variant's wheel from a patched tree.

Runs upstream's own build (``pip wheel --no-build-isolation`` on setup.py,
which drives CMake) with the variant's environment from ``vllm_cpu_build.upstream``,
then gives the wheel its final tags: ``cp38-abi3`` when every compiled module
is a stable-ABI module (checked with abi3audit), and the manylinux platform
tag of variants.json.  The exact environment and command are printed first,
so a build log always says what was built and how.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

from vllm_cpu_build import upstream
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from vllm_cpu_build.errors import StepFailed, UsageError
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.patch import STAMP  # written by `vllm-cpu-build patch`
from vllm_cpu_build.results import BuildResult
from vllm_cpu_build.variants import Variant, load

CMAKE = "cmake/cpu_extension.cmake"
ABI3_PYTHON_TAG, ABI3_ABI_TAG = "cp38", "abi3"
ABI3_MINIMUM = "3.8"
# Python modules the build interpreter needs (no build isolation); upstream's
# torch/ninja come on top for a real release, which the worker provides.
BUILD_MODULES = ("setuptools", "setuptools_scm", "wheel")
MIN_CMAKE = Version("3.26")
# Upstream (< 0.17) wraps -mavx512vnni/-mavx512bf16/-mamx-* in a compiler check
# and on failure only warns "... requires gcc/g++ >= 12.3" and builds without.
_SILENT_DROP = re.compile(r'message\(\s*WARNING\s+"[^"]*requires gcc/g\+\+\s*>=\s*([0-9]+(?:\.[0-9]+)*)"')
# Anything the worker's environment might carry that changes the build.
_DROP_ENV = re.compile(r"^(VLLM_|SETUPTOOLS_SCM_PRETEND_VERSION|CMAKE_ARGS$|MAX_JOBS$|_PYTHON_HOST_PLATFORM$)")


class BuildFailed(StepFailed):
    """The build ran and failed (compiler, CMake, pip)."""


# --- interpreter -------------------------------------------------------------


def _py_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=False)
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


def _tool_path(python: str) -> str:
    """PATH with the interpreter's bin directory first (pip-installed cmake, ccache shims)."""
    bindir = str(Path(python).parent)
    return os.pathsep.join([bindir, os.environ.get("PATH", "")])


def check_build_env(python: str) -> list[str]:
    """Problems of ``python`` as a no-isolation build interpreter (empty = fine)."""
    problems = []
    code = ("import importlib.util,sys; "
            f"print(' '.join(m for m in {BUILD_MODULES!r} if importlib.util.find_spec(m) is None))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    missing = out.stdout.split()
    if out.returncode != 0 or missing:
        problems.append(f"{python} lacks {', '.join(missing) or out.stderr.strip()} (pip install "
                        f"{' '.join(m.replace('_', '-') for m in missing)})")
    cmake = shutil.which("cmake", path=_tool_path(python))
    if not cmake:
        problems.append("no cmake on PATH (pip install 'cmake>=3.26')")
    else:
        m = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?)", subprocess.run(
            [cmake, "--version"], capture_output=True, text=True, check=False).stdout)
        if not m or Version(m.group(1)) < MIN_CMAKE:
            problems.append(f"{cmake} is {m.group(1) if m else 'unknown'}; need >= {MIN_CMAKE} "
                            "(pip install 'cmake>=3.26' into the build interpreter)")
    return problems


# --- compiler ----------------------------------------------------------------


@dataclass
class Compiler:
    command: str
    gnu: bool
    version: Version | None

    def describe(self) -> str:
        return f"{self.command} ({'GNU' if self.gnu else 'not GNU'} {self.version or '?'})"


def probe_compiler(env: dict[str, str]) -> Compiler:
    """The C++ compiler CMake will pick (``$CXX`` or ``c++``)."""
    cxx = env.get("CXX") or "c++"
    try:
        verbose = subprocess.run([cxx, "-v"], capture_output=True, text=True, check=False, env=env).stderr
        full = subprocess.run([cxx, "-dumpfullversion"], capture_output=True, text=True, check=False,
                              env=env).stdout.strip()
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
    if arch != "x86_64" or gate is None or not (f["avx512vnni"] or f["avx512bf16"] or f["amxbf16"]):
        return None
    if compiler.gnu and compiler.version is not None and compiler.version >= gate:
        return None
    return (f"{variant.package} needs GCC >= {gate}, the C++ compiler is {compiler.describe()}: "
            f"this vLLM's {CMAKE} would silently build without VNNI/BF16/AMX (set CXX/CC to a newer GCC)")


# --- wheel tags --------------------------------------------------------------


def _extension_modules(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return [n for n in zf.namelist() if re.search(r"\.so(\.\d+)*$", n)]


def abi3_status(wheel: Path) -> tuple[bool, str]:
    """(every compiled module is a clean stable-ABI module, explanation) via abi3audit."""
    mods = _extension_modules(wheel)
    if not mods:
        return False, "no compiled modules (pure wheel)"
    not_named = [m for m in mods if not m.endswith(".abi3.so")]
    if not_named:
        return False, f"not stable-ABI modules: {', '.join(not_named)}"
    exe = shutil.which("abi3audit", path=str(Path(sys.executable).parent)) or shutil.which("abi3audit")
    cmd = [exe] if exe else [sys.executable, "-m", "abi3audit"]
    out = subprocess.run([*cmd, str(wheel), "--report", "--assume-minimum-abi3", ABI3_MINIMUM],
                         capture_output=True, text=True, check=False)
    try:
        report = json.loads(out.stdout)
        results = [r for spec in report["specs"].values() for r in spec.get("wheel", [])]
    except (json.JSONDecodeError, KeyError, AttributeError):
        return False, f"abi3audit gave no report (exit {out.returncode}): {out.stderr.strip()[-500:]}"
    bad = []
    for r in results:
        res = r.get("result", {})
        if not res.get("is_abi3") or res.get("non_abi3_symbols") or not res.get("is_abi3_baseline_compatible"):
            bad.append(f"{r.get('name')}: non-abi3 symbols {res.get('non_abi3_symbols')}, "
                       f"newer than {ABI3_MINIMUM}: {res.get('future_abi3_objects')}")
    if len(results) != len(mods):
        bad.append(f"abi3audit checked {len(results)} of {len(mods)} modules")
    if bad:
        return False, "; ".join(bad)
    return True, f"{len(mods)} module(s) use only the Python {ABI3_MINIMUM} stable ABI (abi3audit)"


def retag(wheel: Path, abi3: bool, platform_tag: str) -> Path:
    """Give ``wheel`` its final tags with ``wheel tags``; returns the new path."""
    cmd = [sys.executable, "-m", "wheel", "tags", "--remove", f"--platform-tag={platform_tag}"]
    if abi3:
        cmd += [f"--python-tag={ABI3_PYTHON_TAG}", f"--abi-tag={ABI3_ABI_TAG}"]
    out = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True, check=False, cwd=wheel.parent)
    if out.returncode != 0:
        raise BuildFailed(f"wheel tags failed: {out.stderr.strip()}")
    return wheel.parent / out.stdout.strip().splitlines()[-1]


# --- driver ------------------------------------------------------------------


def read_stamp(src: Path) -> dict:
    path = src / STAMP
    if not path.is_file():
        raise UsageError(f"{src}: not patched (no {STAMP}); run `vllm-cpu-build patch` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: damaged stamp ({exc}); patch the tree again") from None


def build(variant: Variant, src: Path, out: Path, *, python: str | None = None, arch: str | None = None,
          max_jobs: int | None = None, log=sys.stderr) -> BuildResult:
    """Build ``variant`` from the patched tree ``src`` into ``out``.

    Raises UsageError (bad input: unpatched tree, wrong variant, missing tools)
    or BuildFailed (the build itself failed).
    """
    start = time.monotonic()
    src = src.resolve()
    stamp = read_stamp(src)
    if stamp.get("variant") != variant.package:
        raise UsageError(f"{src} is patched for {stamp.get('variant')}, not {variant.package}")
    arch = arch or stamp.get("arch") or host_arch()
    if arch != stamp.get("arch"):
        raise UsageError(f"{src} is patched for {stamp.get('arch')}, not {arch}")
    if arch != host_arch():
        raise UsageError(f"cannot build {arch} wheels on this {host_arch()} host (no cross builds)")
    allowed = stamp.get("python_versions") or []
    if allowed and python and re.fullmatch(r"3\.\d+", python) and python not in allowed:
        raise UsageError(f"--python {python}: the tree is patched for Python {', '.join(allowed)}")
    py, py_ver = find_interpreter(python)
    if allowed and py_ver not in allowed:
        raise UsageError(f"Python {py_ver} ({py}) is not one the tree is patched for ({', '.join(allowed)})")
    problems = check_build_env(py)
    if problems:
        raise UsageError("build interpreter not ready: " + "; ".join(problems))
    try:
        var_env = upstream.build_env(variant, arch, stamp["version"], stamp.get("postfix", ""),
                                     max_jobs=max_jobs or len(os.sched_getaffinity(0)))
    except upstream.UnsupportedRelease as exc:
        raise UsageError(str(exc)) from None
    if shutil.which("ccache"):
        var_env["CMAKE_C_COMPILER_LAUNCHER"] = var_env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    dropped = sorted(k for k in os.environ if _DROP_ENV.match(k) and k not in var_env)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(var_env)
    env["PATH"] = _tool_path(py)

    compiler = probe_compiler(env)
    cmake_file = src / CMAKE
    problem = compiler_problem(variant, arch, cmake_file.read_text() if cmake_file.is_file() else "", compiler)
    if problem:
        raise BuildFailed(problem)

    # Leftovers of an earlier build in the same tree must not end up in this wheel.
    for stale in [src / "build", *src.glob("*.egg-info")]:
        if stale.is_dir():
            shutil.rmtree(stale)
    out.mkdir(parents=True, exist_ok=True)
    plat = f"{load().project['manylinux_policy']}_{arch}"
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-build-", dir=out) as tmp:
        cmd = [py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-v",
               "-w", tmp, str(src)]
        print(f"build {variant.package} ({arch}) vLLM {stamp.get('full_version') or stamp['version']} "
              f"with Python {py_ver}, {compiler.describe()}", file=log)
        for k in sorted(var_env):
            print(f"  env {k}={var_env[k]}", file=log)
        if dropped:
            print(f"  env removed from the worker's environment: {' '.join(dropped)}", file=log)
        print(f"  $ {' '.join(cmd)}", file=log, flush=True)
        with subprocess.Popen(cmd, env=env, cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
        if proc.returncode != 0:
            raise BuildFailed(f"pip wheel exited {proc.returncode} (see the log above)")
        built = sorted(Path(tmp).glob("*.whl"))
        if len(built) != 1:
            raise BuildFailed(f"expected one wheel, got {[b.name for b in built]}")
        abi3, why = abi3_status(built[0])
        print(f"  abi3: {abi3}: {why}", file=log)
        final = retag(built[0], abi3, plat)
        dest = out / final.name
        if dest.exists():
            dest.unlink()
        shutil.move(str(final), dest)
    _, _, _, tags = parse_wheel_filename(dest.name)
    print(f"  wheel: {dest}", file=log)
    return BuildResult(str(dest), abi3, why, round(time.monotonic() - start, 1), var_env,
                       sorted(str(t) for t in tags), cmd, py, compiler.describe())


def run(args: argparse.Namespace) -> BuildResult:
    # Absolute paths: pip runs in another directory and writes --out there.
    src = Path(args.src).resolve()
    if not src.is_dir():
        raise UsageError(f"--src {src}: not a directory")
    variant = load().get(args.variant)
    log = sys.stderr if args.json else sys.stdout
    res = build(variant, src, Path(args.out).resolve(), python=args.python, arch=args.arch, max_jobs=args.max_jobs,
                log=log)
    print(f"built {res.wheel} in {res.seconds:.1f} s", file=log)
    return res


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build one variant's wheel from a patched vLLM tree",
                       description=__doc__.split("\n\n")[0] + " Exit 1 when the build fails, 2 when an input or "
                       "prerequisite is missing.")
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--src", required=True, help="source tree patched by `vllm-cpu-build patch`")
    p.add_argument("--out", required=True, help="directory for the wheel")
    p.add_argument("--python", help="3.X or an interpreter path (default: the one running this)")
    p.add_argument("--arch", type=arch_arg,
                   help=f"target arch, one of {', '.join(ARCH_CHOICES)} (default: the patched one; this host's)")
    p.add_argument("--max-jobs", type=int, help="MAX_JOBS for the compiler (default: number of CPUs)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)
