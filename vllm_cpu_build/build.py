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

from vllm_cpu_build import buildenv, finish, provenance, upstream
from vllm_cpu_build.buildroot import RootError, Runner, runner_for
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
    env = dict(os.environ, PATH=_tool_path(python))
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


@dataclass
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


# --- sources and CMake options -------------------------------------------------

_DECLARE = re.compile(r"FetchContent_(?:Declare|Populate)\(\s*([A-Za-z0-9_.+-]+)\b(.*?)\)", re.S)
_FC_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def fetch_declarations(src: Path) -> dict[str, str]:
    """FetchContent dependencies the tree's CPU cmake declares: name -> pinned ref (GIT_TAG or URL file)."""
    out: dict[str, str] = {}
    cmake = src / CMAKE
    text = cmake.read_text() if cmake.is_file() else ""
    for name, body in _DECLARE.findall(text):
        tag = re.search(r"\bGIT_TAG\s+(\S+)", body)
        url = re.search(r"\bURL\s+(\S+)", body)
        if tag:
            out[name] = tag.group(1)
        elif url:
            out[name] = re.sub(r"\.(tar\.gz|tgz|zip|tar\.xz|tar\.bz2)$", "", url.group(1).rsplit("/", 1)[-1])
        else:
            out.setdefault(name, "")  # the SOURCE_DIR form of an upstream `if`: the name alone
    return out


def fetch_sources(src: Path, given: dict[str, Path], mirror: Path | None) -> tuple[dict[str, Path], list[str]]:
    """(name -> local source dir, notes): explicit ``--fetch-source`` first, then ``<mirror>/<name>/<ref>``."""
    declared = fetch_declarations(src)
    chosen: dict[str, Path] = {}
    notes: list[str] = []
    for name, path in given.items():
        if not path.is_dir():
            raise UsageError(f"--fetch-source {name}={path}: not a directory")
        chosen[name] = path.resolve()
    if mirror is not None:
        if not mirror.is_dir():
            raise UsageError(f"--fetch-mirror {mirror}: not a directory")
        for name, ref in declared.items():
            if name in chosen or any(n.upper() == name.upper() for n in chosen):
                continue
            cands = [mirror / name.lower() / ref, mirror / name / ref] if ref else []
            hit = next((c for c in cands if c.is_dir()), None)
            if hit:
                chosen[name] = hit.resolve()
            elif ref:
                notes.append(f"{name} {ref} is not in the mirror ({mirror / name.lower() / ref}); "
                             "a build that needs it fails instead of downloading it")
    return chosen, notes


def cmake_options(fetch: dict[str, Path], mirror: bool, extra: list[str]) -> list[str]:
    """CMAKE_ARGS words (upstream's setup.py splits CMAKE_ARGS on whitespace)."""
    args = [f"-DFETCHCONTENT_SOURCE_DIR_{name.upper()}={path}" for name, path in sorted(fetch.items())]
    if mirror:
        args.append("-DFETCHCONTENT_FULLY_DISCONNECTED=ON")
    args += extra
    bad = [a for a in args if not a or any(c.isspace() for c in a)]
    if bad:
        raise UsageError(f"CMake arguments cannot contain whitespace (upstream splits CMAKE_ARGS): {bad}")
    return args


def parse_fetch_source(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not _FC_NAME.match(name) or not path:
            raise UsageError(f"--fetch-source {v!r}: expected NAME=DIR (e.g. oneDNN=/srv/src/oneDNN-v3.10)")
        out[name] = Path(path).expanduser()
    return out


# --- source and record -----------------------------------------------------------


def source_info(src: Path, stamp: dict, sdist: Path | None) -> dict:
    info: dict = {"upstream_version": stamp.get("version"), "release_line": stamp.get("release_line")}
    if sdist is not None:
        info["sdist"] = sdist.name
        info["sdist_sha256"] = provenance.sha256(sdist)
    if (src / ".git").exists():
        def git(*a: str) -> str:
            r = subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True, check=False)
            return r.stdout.strip() if r.returncode == 0 else ""
        info["git_commit"] = git("rev-parse", "HEAD") or None
        info["git_tag"] = git("describe", "--tags", "--exact-match", "HEAD") or None
    return info


# --- driver ------------------------------------------------------------------


def _interpreter(python: str | None, runner: Runner) -> tuple[str, str]:
    """(interpreter, "3.X") on the host, or inside the build root."""
    if not runner.in_root:
        return find_interpreter(python)
    exe = python or "python3"
    if re.fullmatch(r"3\.\d+", exe):
        exe = f"python{exe}"
    r = runner.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    if r.returncode != 0:
        raise UsageError(f"--python {exe}: cannot run it in {runner.label}: {(r.stderr or r.stdout).strip()[-300:]}")
    return exe, r.stdout.strip()


def build(variant: Variant, src: Path, out: Path, *, python: str | None = None, arch: str | None = None,
          max_jobs: int | None = None, log=sys.stderr, build_env: str = "managed", torch_index: str | None = None,
          torch: str | None = None, allow_torch_mismatch: bool = False, fetch_source: dict[str, Path] | None = None,
          fetch_mirror: Path | None = None, cmake_args: list[str] | None = None, root: str | None = None,
          root_bind: list[Path] | None = None, strip: bool = True, debug_archive: bool = False,
          sdist: Path | None = None) -> BuildResult:
    """Build ``variant`` from the patched tree ``src`` into ``out``.

    Raises UsageError (bad input: unpatched tree, wrong variant, a build
    environment that is not the release's, missing system prerequisites)
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
    if build_env not in ("managed", "interpreter"):
        raise UsageError(f"--build-env {build_env!r}: managed or interpreter")
    if torch and build_env != "managed":
        raise UsageError("--torch chooses what the managed build env installs; with --build-env interpreter "
                         "the interpreter's own torch is checked")
    allowed = stamp.get("python_versions") or []
    if allowed and python and re.fullmatch(r"3\.\d+", python) and python not in allowed:
        raise UsageError(f"--python {python}: the tree is patched for Python {', '.join(allowed)}")
    if torch_index is None:
        torch_index = load().project["torch_index_url"]
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    try:
        runner = runner_for(root, log)
    except RootError as exc:
        raise UsageError(str(exc)) from None
    runner.expose(src)
    runner.expose(out)
    for b in root_bind or []:
        if not Path(b).exists():
            raise UsageError(f"--root-bind {b}: no such path")
        runner.expose(Path(b), writable=False)
    base_py, py_ver = _interpreter(python, runner)
    if allowed and py_ver not in allowed:
        raise UsageError(f"Python {py_ver} ({base_py}) is not one the tree is patched for ({', '.join(allowed)})")
    try:
        need = buildenv.needs(src, arch, py_ver, torch)
    except buildenv.EnvError as exc:
        raise UsageError(str(exc)) from None
    print(f"build {variant.package} ({arch}) vLLM {stamp.get('full_version') or stamp['version']} "
          f"in {runner.label}", file=log)
    if build_env == "managed":
        try:
            venv = buildenv.ensure_venv(need, base_py, runner, torch_index=torch_index, log=log)
        except buildenv.EnvError as exc:
            raise UsageError(str(exc)) from None
        py = venv.python
        env_info = {"kind": "managed", **venv.as_json(), "requirements": need.requirements,
                    "torch_index": torch_index if need.torch_install else None}
        print(f"  build env: {venv.path} ({'created' if venv.created else 'cached'}, {venv.seconds:.0f} s)",
              file=log)
    else:
        py = base_py
        problems = check_build_env(py, runner)
        if problems:
            raise UsageError("build interpreter not ready: " + "; ".join(problems))
        env_info = {"kind": "interpreter", "python": py}
    try:
        var_env = upstream.build_env(variant, arch, stamp["version"], stamp.get("postfix", ""),
                                     max_jobs=max_jobs or len(os.sched_getaffinity(0)))
    except upstream.UnsupportedRelease as exc:
        raise UsageError(str(exc)) from None
    fetch, fetch_notes = fetch_sources(src, fetch_source or {}, fetch_mirror)
    if fetch_mirror is not None:
        runner.expose(fetch_mirror, writable=False)
    for path in fetch.values():
        runner.expose(path, writable=False)
    cm_args = cmake_options(fetch, fetch_mirror is not None, list(cmake_args or []))
    if cm_args:
        var_env["CMAKE_ARGS"] = " ".join(cm_args)
    for name, path in fetch.items():
        var_env[f"FETCHCONTENT_SOURCE_DIR_{name.upper()}"] = str(path)  # upstream reads oneDNN's from the env
    if runner.run(["sh", "-c", "command -v ccache"]).returncode == 0:
        var_env["CMAKE_C_COMPILER_LAUNCHER"] = var_env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
        # Paths under the tree hashed relative, the build dir not at all: a rebuild of the same
        # release in another checkout directory hits the cache (debug info is stripped anyway).
        var_env.setdefault("CCACHE_BASEDIR", str(src))
        var_env.setdefault("CCACHE_NOHASHDIR", "1")
    dropped = sorted(k for k in os.environ if _DROP_ENV.match(k) and k not in var_env)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(var_env)
    env["PATH"] = _tool_path(py)

    compiler = probe_compiler(env, runner)
    cmake_file = src / CMAKE
    problem = compiler_problem(variant, arch, cmake_file.read_text() if cmake_file.is_file() else "", compiler)
    if problem:
        raise BuildFailed(problem)
    missing = buildenv.system_problems(need, runner, env, arch, compiler.gnu, compiler.version, compiler.describe())
    if missing:
        raise UsageError("system prerequisites missing: " + "; ".join(missing))
    installed = buildenv.installed_version(py, "torch", runner)
    mismatch = buildenv.torch_problem(need.torch_pin, installed, arch)
    torch_info = {"pin": need.torch_pin, "built_against": installed, "matches": mismatch is None}
    if mismatch and not allow_torch_mismatch:
        raise UsageError(f"torch mismatch: {mismatch}; refusing to build a wheel whose pin lies "
                         "(--allow-torch-mismatch is for tests only: the wheel records it and verify fails it)")
    if mismatch:
        print(f"  WARNING: {mismatch}: building anyway (--allow-torch-mismatch); verify will fail this wheel",
              file=log)

    # Leftovers of an earlier build in the same tree must not end up in this wheel.
    for stale in [src / "build", *src.glob("*.egg-info")]:
        if stale.is_dir():
            shutil.rmtree(stale)
    policy = load().project["manylinux_policy"]
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-build-", dir=out) as tmp:
        cmd = [py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-v",
               "-w", tmp, str(src)]
        print(f"  Python {py_ver} ({py}), {compiler.describe()}", file=log)
        if need.torch_pin:
            print(f"  torch: the wheel pins {need.torch_pin}; building against {installed}", file=log)
        for k in sorted(var_env):
            print(f"  env {k}={var_env[k]}", file=log)
        for note in fetch_notes:
            print(f"  fetch: {note}", file=log)
        if dropped:
            print(f"  env removed from the worker's environment: {' '.join(dropped)}", file=log)
        print(f"  $ {' '.join(cmd)}", file=log, flush=True)
        with runner.popen(cmd, env=env, cwd=str(src)) as proc:
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
        rel = upstream.release_line(stamp["version"])
        if rel.abi3 and not abi3:
            # plan promised one wheel for every Python: a cp3X-only wheel would leave the others without one.
            raise BuildFailed(f"release line {rel.name} plans one cp38-abi3 wheel for every Python, but {why}; "
                              "mark the line abi3=False in vllm_cpu_build/upstream.py (one wheel per Python)")
        abi3 = abi3 and rel.abi3  # a per-Python build keeps its cp3X-cp3X tags, as planned
        record = {
            "schema": provenance.SCHEMA, "package": variant.package,
            "version": stamp.get("full_version") or stamp["version"], "arch": arch,
            "variant": {"isa_flags": dict(variant.isa_flags), "pinned_cpuinfo_flags": stamp.get("pinned_flags")},
            "source": source_info(src, stamp, sdist),
            "build": {"env": {k: v for k, v in var_env.items() if k != "MAX_JOBS" and not k.startswith("CCACHE_")},
                      "cmake_args": cm_args,
                      "fetchcontent": {k: str(v) for k, v in fetch.items()}, "python": py_ver,
                      "compiler": compiler.describe(), "root": runner.describe(),
                      "build_env": {k: v for k, v in env_info.items() if k in ("kind", "key", "packages",
                                                                                "torch_index")}},
            "torch": torch_info,
        }
        if need.rust:
            # Upstream builds its Rust frontend as *optional* extensions: a failed cargo build leaves it out.
            with zipfile.ZipFile(built[0]) as zf:
                rust = sorted(n for n in zf.namelist() if re.match(r"^vllm/(_rust_[^/]*\.so|vllm-rs)$", n))
            record["rust_frontend"] = {"modules": rust}
            if not rust:
                print("  WARNING: the release's Rust frontend (vllm/_rust_*, vllm-rs) is not in the wheel: "
                      "its optional cargo build failed (see the log above)", file=log)
        try:
            needed, _report = finish.needed_tag(built[0], policy, arch)
            plat = finish.platform_tag(needed, policy, arch)
            record["platform"] = {"policy": policy, "needed": needed, "tag": plat}
            print(f"  platform: binaries need {needed} (auditwheel); policy {policy}; tag {plat}", file=log)
            dbg = out / (built[0].name[:-4] + ".debug.tar.gz") if (strip and debug_archive) else None
            strip_info = finish.rewrite(built[0], strip=strip, record=record, debug_archive=dbg)
        except finish.FinishError as exc:
            raise BuildFailed(str(exc)) from None
        for mod, sz in strip_info["modules"].items():
            print(f"  strip {mod}: {sz['before']:,} -> {sz['after']:,} bytes", file=log)
        final = retag(built[0], abi3, plat)
        dest = out / final.name
        if dest.exists():
            dest.unlink()
        shutil.move(str(final), dest)
        if strip_info.get("debug_archive"):
            src_dbg = out / strip_info["debug_archive"]
            dbg_final = out / (dest.name[:-4] + ".debug.tar.gz")
            src_dbg.replace(dbg_final)
            strip_info["debug_archive"] = dbg_final.name
    record["strip"] = strip_info
    side = provenance.write_beside(dest, record)
    _, _, _, tags = parse_wheel_filename(dest.name)
    print(f"  wheel: {dest} ({dest.stat().st_size:,} bytes); record {side.name}", file=log)
    return BuildResult(str(dest), abi3, why, round(time.monotonic() - start, 1), var_env,
                       sorted(str(t) for t in tags), cmd, py, compiler.describe(), torch=torch_info,
                       platform=record["platform"], strip=strip_info, build_env=env_info, root=runner.describe(),
                       provenance=str(side), record=record)


def run(args: argparse.Namespace) -> BuildResult:
    # Absolute paths: pip runs in another directory and writes --out there.
    src = Path(args.src).resolve()
    if not src.is_dir():
        raise UsageError(f"--src {src}: not a directory")
    variant = load().get(args.variant)
    log = sys.stderr if args.json else sys.stdout
    sdist = Path(args.sdist).resolve() if args.sdist else None
    if sdist is not None and not sdist.is_file():
        raise UsageError(f"--sdist {sdist}: no such file")
    res = build(variant, src, Path(args.out).resolve(), python=args.python, arch=args.arch, max_jobs=args.max_jobs,
                log=log, build_env=args.build_env, torch_index=args.torch_index_url, torch=args.torch,
                allow_torch_mismatch=args.allow_torch_mismatch,
                fetch_source=parse_fetch_source(args.fetch_source),
                fetch_mirror=Path(args.fetch_mirror).expanduser().resolve() if args.fetch_mirror else None,
                cmake_args=args.cmake_arg, root=args.root, root_bind=[Path(b) for b in args.root_bind],
                strip=args.strip, debug_archive=args.debug_archive, sdist=sdist)
    print(f"built {res.wheel} in {res.seconds:.1f} s", file=log)
    return res


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build one variant's wheel from a patched vLLM tree",
                       description=__doc__.split("\n\n")[0] + " Exit 1 when the build fails, 2 when an input or "
                       "prerequisite is missing.")
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--src", required=True, help="source tree patched by `vllm-cpu-build patch`")
    p.add_argument("--out", required=True, help="directory for the wheel (and its .provenance.json)")
    p.add_argument("--python", help="3.X or an interpreter path (default: the one running this; in a build root "
                                    "its python3)")
    p.add_argument("--arch", type=arch_arg,
                   help=f"target arch, one of {', '.join(ARCH_CHOICES)} (default: the patched one; this host's)")
    p.add_argument("--max-jobs", type=int, help="MAX_JOBS for the compiler (default: number of CPUs)")
    env = p.add_argument_group("build environment")
    env.add_argument("--build-env", choices=("managed", "interpreter"), default="managed",
                     help="managed (default): a cached venv with the release's own build requirements made from "
                          "--python; interpreter: build with --python as it is")
    env.add_argument("--torch-index-url", help="index for torch (default: variants.json torch_index_url, the "
                                               "PyTorch CPU index; '' = none); pip's own configuration applies too")
    env.add_argument("--torch", help="TEST ONLY: install this torch requirement instead of the wheel's pin "
                                     "(refused unless --allow-torch-mismatch)")
    env.add_argument("--allow-torch-mismatch", action="store_true",
                     help="TEST ONLY: build although the build env's torch is not the wheel's pin; the wheel "
                          "records it and verify (so upload) fails it")
    src = p.add_argument_group("sources and CMake")
    src.add_argument("--fetch-source", action="append", default=[], metavar="NAME=DIR",
                     help="local source tree for a FetchContent dependency (e.g. oneDNN=/srv/oneDNN-v3.10); "
                          "repeatable")
    src.add_argument("--fetch-mirror", metavar="DIR",
                     help="worker-side mirror: DIR/<name>/<GIT_TAG> for every FetchContent dependency the "
                          "release declares; the build then never downloads")
    src.add_argument("--cmake-arg", action="append", default=[], metavar="ARG",
                     help="extra CMake argument (e.g. -DONEDNN_BUILD_GRAPH=OFF), repeatable; no whitespace")
    src.add_argument("--sdist", help="the upstream sdist the tree came from (name and sha256 go into the record)")
    rootg = p.add_argument_group("build root")
    rootg.add_argument("--root", help="build inside this root file system (directory or tarball) with bubblewrap")
    rootg.add_argument("--root-bind", action="append", default=[], metavar="PATH",
                       help="host path made visible read-only inside the root (e.g. a wheelhouse); repeatable")
    out = p.add_argument_group("wheel")
    out.add_argument("--strip", action=argparse.BooleanOptionalAction, default=True,
                     help="strip debug info from vLLM's modules (default: yes)")
    out.add_argument("--debug-archive", action="store_true",
                     help="keep the stripped debug info as <wheel>.debug.tar.gz beside the wheel")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)
