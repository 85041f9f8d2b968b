"""``vllm-cpu-build build``: build one variant's wheel from a patched tree.

Runs upstream's own build (``pip wheel --no-build-isolation`` on setup.py,
which drives CMake) with the variant's environment from ``vllm_cpu_build.upstream``,
then gives the wheel its final tags: ``cpXY-abi3`` when the build's Python is
at least the stable ABI 3.Y the tree's modules ask for (``abi3.stable_abi``;
every module checked with abi3audit), else ``cp3X-cp3X``, and the manylinux
platform tag of variants.json.  The exact environment and command are printed first,
so a build log always says what was built and how.  The same tag built
again, on another worker or in another directory, gives the same bytes
(``reproducible.py``; ``vllm-cpu-build compare`` checks).

``build(BuildOptions)`` runs named phases, each a small function of the
options and what the earlier phases found:

1. ``_target``: the patched tree's stamp against the options (variant, arch, Python);
2. ``_prepare``: where it runs (this host or a build root), the interpreter,
   the release's build requirements, the build env (``buildenv``);
3. ``_environment``: the variant's ISA switches (``upstream``), FetchContent
   sources and CMake arguments (``fetchcontent``), ccache, what is dropped
   from the worker's environment, ``SOURCE_DATE_EPOCH`` and the path maps
   (``reproducible``);
4. ``_check_tools``: the compiler gate, system prerequisites, the torch pin (``buildtools``);
5. ``_compile``: ``pip wheel``, streamed into the log;
6. ``_finish``: abi3 (``abi3``), the provenance record, platform tag,
   strip and embed (``finish``), final tags, the archive written
   deterministically (``reproducible``);
7. ``_result``: the record beside the wheel, and the typed ``BuildResult``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from packaging.utils import parse_wheel_filename

from vllm_cpu_build import abi3, buildenv, buildtools, compile_cache, fetchcontent, finish, reproducible, upstream
from vllm_cpu_build.buildopts import BuildOptions
from vllm_cpu_build.buildroot import RootError, Runner, runner_for
from vllm_cpu_build.buildtools import Compiler
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from vllm_cpu_build.enums import Arch, BuildEnvKind
from vllm_cpu_build.errors import BuildFailed, UsageError
from vllm_cpu_build.helptext import describe
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.patch import Stamp
from vllm_cpu_build.provenance import (
    BuildEnvInfo,
    BuildInfo,
    Record,
    RustFrontend,
    Source,
    Torch,
    VariantInfo,
    sha256,
    write_beside,
)
from vllm_cpu_build.results import BuildResult, CompileCache
from vllm_cpu_build.variants import load

__all__ = ["BuildOptions", "build", "register", "run"]

# Anything the worker's environment might carry that changes the build: its own CCACHE_BASEDIR
# (compile_cache sets the tree's), a remote-only ccache (the worker's own cache directory
# always serves first: compile_cache.py).
_DROP_ENV = re.compile(r"^(VLLM_|SETUPTOOLS_SCM_PRETEND_VERSION|CMAKE_ARGS$|MAX_JOBS$|_PYTHON_HOST_PLATFORM$"
                       r"|CCACHE_BASEDIR$|CCACHE_REMOTE_ONLY$)")
# Upstream's optional Rust frontend (0.27+).
_RUST = re.compile(r"^vllm/(_rust_[^/]*\.so|vllm-rs)$")


# --- what the phases hand on ---------------------------------------------------


@dataclass(frozen=True)
class _Target:
    stamp: Stamp
    arch: Arch


@dataclass(frozen=True)
class _Prepared:
    runner: Runner
    python: str  # the build interpreter
    python_version: str  # "3.X"
    need: buildenv.Needs
    env_info: dict[str, Any]  # BuildResult.build_env
    record_env: BuildEnvInfo


@dataclass(frozen=True)
class _Environment:
    variant_env: dict[str, str]  # what the build sets: printed and recorded
    full: dict[str, str]  # the build's process environment
    dropped: list[str]  # worker variables removed from it
    fetch: dict[str, Path]
    fetch_notes: list[str]
    cmake_args: list[str]
    epoch: reproducible.Epoch  # SOURCE_DATE_EPOCH and where it came from
    path_maps: dict[str, str]  # worker directory -> its fixed name in the binaries
    cache: compile_cache.Setup | None  # ccache and this build's stats log


@dataclass(frozen=True)
class _Tools:
    compiler: Compiler
    torch: Torch


@dataclass(frozen=True)
class _Finished:
    wheel: Path
    abi3: bool
    abi3_reason: str
    record: Record


# --- the phases ------------------------------------------------------------------


def build(opts: BuildOptions) -> BuildResult:
    """Build ``opts.variant`` from the patched tree ``opts.src`` into ``opts.out``.

    Raises UsageError (bad input: unpatched tree, wrong variant, a build
    environment that is not the release's, missing system prerequisites)
    or BuildFailed (the build itself failed).
    """
    start = time.monotonic()
    target = _target(opts)
    prepared = _prepare(opts, target)
    env = _environment(opts, target, prepared)
    tools = _check_tools(opts, target, prepared, env)
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-build-", dir=opts.out) as tmp:
        try:
            built, command = _compile(opts, prepared, env, tools, Path(tmp))
        finally:
            cache = compile_cache.collect(env.cache, opts.out_log)
        finished = _finish(opts, target, prepared, env, tools, built)
    return _result(opts, prepared, env, tools, finished, command, time.monotonic() - start, cache)


def _target(opts: BuildOptions) -> _Target:
    """The arch and Python the tree is patched for, against what is asked."""
    stamp = Stamp.read(opts.src)
    if stamp.variant != opts.variant.package:
        raise UsageError(f"{opts.src} is patched for {stamp.variant}, not {opts.variant.package}")
    arch = opts.arch or stamp.arch
    if arch != stamp.arch:
        raise UsageError(f"{opts.src} is patched for {stamp.arch}, not {arch}")
    if arch != host_arch():
        raise UsageError(f"cannot build {arch} wheels on this {host_arch()} host (no cross builds)")
    allowed = stamp.python_versions
    if allowed and opts.python and re.fullmatch(r"3\.\d+", opts.python) and opts.python not in allowed:
        raise UsageError(f"--python {opts.python}: the tree is patched for Python {', '.join(allowed)}")
    return _Target(stamp, arch)


def _runner(opts: BuildOptions) -> Runner:
    """This host or the build root, seeing the tree, the output and ``--root-bind``."""
    opts.out.mkdir(parents=True, exist_ok=True)
    try:
        runner = runner_for(opts.root, opts.out_log)
    except RootError as exc:
        raise UsageError(str(exc)) from None
    runner.expose(opts.src)
    runner.expose(opts.out)
    for b in opts.root_bind:
        if not b.exists():
            raise UsageError(f"--root-bind {b}: no such path")
        runner.expose(b, writable=False)
    return runner


def _prepare(opts: BuildOptions, target: _Target) -> _Prepared:
    """The interpreter and the build env holding the release's build requirements."""
    log = opts.out_log
    torch_index = load().project["torch_index_url"] if opts.torch_index is None else opts.torch_index
    runner = _runner(opts)
    base_py, py_ver = buildtools.interpreter(opts.python, runner)
    allowed = target.stamp.python_versions
    if allowed and py_ver not in allowed:
        raise UsageError(f"Python {py_ver} ({base_py}) is not one the tree is patched for ({', '.join(allowed)})")
    try:
        need = buildenv.needs(opts.src, target.arch, py_ver, opts.torch)
    except buildenv.EnvError as exc:
        raise UsageError(str(exc)) from None
    print(f"build {opts.variant.package} ({target.arch}) vLLM {target.stamp.full_version or target.stamp.version} "
          f"in {runner.label}", file=log)
    if opts.build_env is BuildEnvKind.INTERPRETER:
        problems = buildtools.check_build_env(base_py, runner)
        if problems:
            raise UsageError("build interpreter not ready: " + "; ".join(problems))
        return _Prepared(runner, base_py, py_ver, need, {"kind": BuildEnvKind.INTERPRETER, "python": base_py},
                         BuildEnvInfo(BuildEnvKind.INTERPRETER))
    try:
        venv = buildenv.ensure_venv(need, base_py, runner, torch_index=torch_index, log=log)
    except buildenv.EnvError as exc:
        raise UsageError(str(exc)) from None
    index = torch_index if need.torch_install else None
    print(f"  build env: {venv.path} ({'created' if venv.created else 'cached'}, {venv.seconds:.0f} s)", file=log)
    info = {"kind": BuildEnvKind.MANAGED, **venv.as_json(), "requirements": need.requirements, "torch_index": index}
    return _Prepared(runner, venv.python, py_ver, need, info,
                     BuildEnvInfo(BuildEnvKind.MANAGED, venv.key, dict(venv.packages), index))


def _environment(opts: BuildOptions, target: _Target, prep: _Prepared) -> _Environment:
    """The variant's switches, FetchContent sources, CMake arguments, ccache; the worker's variables that go."""
    try:
        var_env = upstream.build_env(opts.variant, target.arch, target.stamp.version, target.stamp.postfix,
                                     max_jobs=opts.max_jobs or len(os.sched_getaffinity(0)))
    except upstream.UnsupportedRelease as exc:
        raise UsageError(str(exc)) from None
    fetch, notes = fetchcontent.sources(opts.src, dict(opts.fetch_source), opts.fetch_mirror)
    if opts.fetch_mirror is not None:
        prep.runner.expose(opts.fetch_mirror, writable=False)
    for path in fetch.values():
        prep.runner.expose(path, writable=False)
    cm_args = fetchcontent.cmake_options(fetch, opts.fetch_mirror is not None, list(opts.cmake_args))
    if cm_args:
        var_env["CMAKE_ARGS"] = " ".join(cm_args)
    for name, path in fetch.items():
        var_env[f"FETCHCONTENT_SOURCE_DIR_{name.upper()}"] = str(path)  # upstream reads oneDNN's from the env
    cache = compile_cache.configure(var_env, opts.src, prep.runner, opts.out, opts.out_log)
    dropped = sorted(k for k in os.environ if _DROP_ENV.match(k) and k not in var_env)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(var_env)
    # Reproducible: time and this worker's paths out of the binaries. Not in var_env: the record must
    # not name the directories a worker happened to build in.
    try:
        epoch = reproducible.source_date_epoch(opts.src, opts.source_date_epoch)
    except reproducible.EpochError as exc:
        raise UsageError(str(exc)) from None
    managed = prep.record_env.kind is BuildEnvKind.MANAGED
    base = prep.runner.run([prep.python, "-c", "import sys; print(sys.base_prefix)"])
    maps = reproducible.path_maps(opts.src, Path(prep.python).parent.parent if managed else None, fetch,
                                  base.stdout.strip() if base.returncode == 0 else None)
    env.update(reproducible.build_environment(epoch.value, maps, os.environ))
    env["PATH"] = buildtools.tool_path(prep.python)
    return _Environment(var_env, env, dropped, fetch, notes, cm_args, epoch, maps, cache)


def _check_tools(opts: BuildOptions, target: _Target, prep: _Prepared, env: _Environment) -> _Tools:
    """Refuse a compiler that would drop the variant's ISA, a system lacking prerequisites, a torch not the pin."""
    compiler = buildtools.probe_compiler(env.full, prep.runner)
    cmake_file = opts.src / buildenv.CPU_CMAKE
    cmake_text = cmake_file.read_text() if cmake_file.is_file() else ""
    problem = buildtools.compiler_problem(opts.variant, target.arch, cmake_text, compiler)
    if problem:
        raise BuildFailed(problem)
    missing = buildenv.system_problems(prep.need, prep.runner, env.full, target.arch, compiler.gnu,
                                       compiler.version, compiler.describe())
    if missing:
        raise UsageError("system prerequisites missing: " + "; ".join(missing))
    installed = buildenv.installed_version(prep.python, "torch", prep.runner)
    mismatch = buildenv.torch_problem(prep.need.torch_pin, installed, target.arch)
    if mismatch and not opts.allow_torch_mismatch:
        raise UsageError(f"torch mismatch: {mismatch}; refusing to build a wheel whose pin lies "
                         "(--allow-torch-mismatch is for tests only: the wheel records it and verify fails it)")
    if mismatch:
        print(f"  WARNING: {mismatch}: building anyway (--allow-torch-mismatch); verify will fail this wheel",
              file=opts.out_log)
    return _Tools(compiler, Torch(prep.need.torch_pin, installed, mismatch is None))


def _compile(opts: BuildOptions, prep: _Prepared, env: _Environment, tools: _Tools,
             tmp: Path) -> tuple[Path, list[str]]:
    """``pip wheel`` of the tree into ``tmp``: (the one wheel it made, the command)."""
    log = opts.out_log
    # Leftovers of an earlier build in the same tree must not end up in this wheel.
    for stale in [opts.src / "build", *opts.src.glob("*.egg-info")]:
        if stale.is_dir():
            shutil.rmtree(stale)
    cmd = [prep.python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-v",
           "-w", str(tmp), str(opts.src)]
    print(f"  Python {prep.python_version} ({prep.python}), {tools.compiler.describe()}", file=log)
    if prep.need.torch_pin:
        print(f"  torch: the wheel pins {prep.need.torch_pin}; building against {tools.torch.built_against}", file=log)
    for k in sorted(env.variant_env):
        print(f"  env {k}={env.variant_env[k]}", file=log)
    for note in env.fetch_notes:
        print(f"  fetch: {note}", file=log)
    if env.dropped:
        print(f"  env removed from the worker's environment: {' '.join(env.dropped)}", file=log)
    print(f"  reproducible: SOURCE_DATE_EPOCH={env.epoch.value if env.epoch.value is not None else '(none)'} "
          f"({env.epoch.origin}); paths mapped: "
          + ", ".join(f"{k} -> {v}" for k, v in env.path_maps.items()), file=log)
    print(f"  $ {' '.join(cmd)}", file=log, flush=True)
    with prep.runner.popen(cmd, env=env.full, cwd=str(opts.src)) as proc:
        if proc.stdout is None:  # popen pipes stdout; without it the log would silently lose the build
            raise BuildFailed("pip wheel: no output pipe")
        for line in proc.stdout:
            log.write(line)
    if proc.returncode != 0:
        raise BuildFailed(f"pip wheel exited {proc.returncode} (see the log above)")
    built = sorted(tmp.glob("*.whl"))
    if len(built) != 1:
        raise BuildFailed(f"expected one wheel, got {[b.name for b in built]}")
    return built[0], cmd


def _abi3(opts: BuildOptions, prep: _Prepared, built: Path, log: TextIO) -> tuple[str | None, str]:
    """(the stable ABI to tag the wheel for, None for a cp3X-cp3X wheel; why), as ``plan`` planned it."""
    floor, why = abi3.wheel_abi(opts.src, prep.python_version, built)
    print(f"  abi3: {floor or 'no'}: {why}", file=log)
    return floor, why


def _source(opts: BuildOptions, stamp: Stamp) -> Source:
    """What the tree came from: the sdist (name, sha256) and/or the git commit and tag."""
    sdist = opts.sdist.name if opts.sdist else None
    sdist_sha = sha256(opts.sdist) if opts.sdist else None
    commit = tag = None
    if (opts.src / ".git").exists():
        def git(*a: str) -> str | None:
            r = subprocess.run(["git", "-C", str(opts.src), *a], capture_output=True, text=True, check=False)
            return (r.stdout.strip() or None) if r.returncode == 0 else None
        commit = git("rev-parse", "HEAD")
        tag = git("describe", "--tags", "--exact-match", "HEAD")
    return Source(stamp.version, stamp.release_line, sdist, sdist_sha, commit, tag)


def _record(opts: BuildOptions, target: _Target, prep: _Prepared, env: _Environment, tools: _Tools,
            built: Path) -> Record:
    """The provenance record of what was built (platform and strip come with finishing)."""
    stamp = target.stamp
    # Not what changes the bytes: the job count and the compile cache (an uncached rebuild has the same record).
    recorded_env = {k: v for k, v in env.variant_env.items()
                    if k != "MAX_JOBS" and not k.startswith("CCACHE_") and not k.endswith("_COMPILER_LAUNCHER")}
    record = Record(
        package=opts.variant.package, version=stamp.full_version or stamp.version, arch=target.arch,
        variant=VariantInfo(dict(opts.variant.isa_flags), list(stamp.pinned_flags)),
        source=_source(opts, stamp),
        build=BuildInfo(recorded_env, env.cmake_args, {k: str(v) for k, v in env.fetch.items()},
                        prep.python_version, tools.compiler.describe(), prep.runner.describe(), prep.record_env),
        torch=tools.torch, source_date_epoch=env.epoch.value)
    if not prep.need.rust:
        return record
    # Upstream builds its Rust frontend as *optional* extensions: a failed cargo build leaves it out.
    with zipfile.ZipFile(built) as zf:
        rust = sorted(n for n in zf.namelist() if _RUST.match(n))
    if not rust:
        print("  WARNING: the release's Rust frontend (vllm/_rust_*, vllm-rs) is not in the wheel: "
              "its optional cargo build failed (see the log above)", file=opts.out_log)
    return dataclasses.replace(record, rust_frontend=RustFrontend(rust))


def _finish(opts: BuildOptions, target: _Target, prep: _Prepared, env: _Environment, tools: _Tools,
            built: Path) -> _Finished:
    """Platform tag, strip, the record inside, final tags; the wheel (and debug archive) moved to ``out``."""
    log = opts.out_log
    floor, why = _abi3(opts, prep, built, log)
    record = _record(opts, target, prep, env, tools, built)
    policy = load().project["manylinux_policy"]
    try:
        plat = finish.platform(built, policy, target.arch)
        record = dataclasses.replace(record, platform=plat)
        print(f"  platform: binaries need {plat.needed} (auditwheel); policy {policy}; tag {plat.tag}", file=log)
        dbg = opts.out / (built.name[:-4] + ".debug.tar.gz") if (opts.strip and opts.debug_archive) else None
        strip = finish.rewrite(built, strip=opts.strip, record=record, debug_archive=dbg, epoch=env.epoch.value)
    except finish.FinishError as exc:
        raise BuildFailed(str(exc)) from None
    for mod, sz in strip.modules.items():
        print(f"  strip {mod}: {sz.before:,} -> {sz.after:,} bytes", file=log)
    final = abi3.retag(built, floor, plat.tag)
    reproducible.normalize_wheel(final, env.epoch.value)  # last: strip and retag wrote their own times
    dest = opts.out / final.name
    if dest.exists():
        dest.unlink()
    shutil.move(str(final), dest)
    if strip.debug_archive:
        dbg_final = opts.out / (dest.name[:-4] + ".debug.tar.gz")
        (opts.out / strip.debug_archive).replace(dbg_final)
        strip = dataclasses.replace(strip, debug_archive=dbg_final.name)
    return _Finished(dest, floor is not None, why, dataclasses.replace(record, strip=strip))


def _result(opts: BuildOptions, prep: _Prepared, env: _Environment, tools: _Tools, finished: _Finished,
            command: list[str], seconds: float, cache: CompileCache | None) -> BuildResult:
    """The record beside the wheel; the typed result."""
    dest, record = finished.wheel, finished.record
    side = write_beside(dest, record)
    _, _, _, tags = parse_wheel_filename(dest.name)
    print(f"  wheel: {dest} ({dest.stat().st_size:,} bytes); record {side.name}", file=opts.out_log)
    return BuildResult(str(dest), finished.abi3, finished.abi3_reason, round(seconds, 1), env.variant_env,
                       sorted(str(t) for t in tags), command, prep.python, tools.compiler.describe(),
                       torch=record.torch, platform=record.platform, strip=record.strip, build_env=prep.env_info,
                       root=record.build.root, provenance=str(side), record=record, sha256=sha256(dest),
                       compile_cache=cache)


# --- CLI -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> BuildResult:
    opts = BuildOptions.from_args(args)
    res = build(opts)
    print(f"built {res.wheel} in {res.seconds:.1f} s", file=opts.out_log)
    return res


def _epoch_arg(value: str) -> int:
    try:
        return reproducible.parse_epoch(value, "--source-date-epoch")
    except reproducible.EpochError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build one variant's wheel from a patched vLLM tree",
                       description=describe(__doc__, "Exit 1 when the build fails, 2 when an input or "
                                                     "prerequisite is missing."))
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--src", required=True, help="source tree patched by `vllm-cpu-build patch`")
    p.add_argument("--out", required=True, help="directory for the wheel (and its .provenance.json)")
    p.add_argument("--python", help="3.X or an interpreter path (default: the one running this; in a build root "
                                    "its python3)")
    p.add_argument("--arch", type=arch_arg,
                   help=f"target arch, one of {', '.join(ARCH_CHOICES)} (default: the patched one; this host's)")
    p.add_argument("--max-jobs", type=int, help="MAX_JOBS for the compiler (default: number of CPUs)")
    env = p.add_argument_group("build environment")
    env.add_argument("--build-env", choices=[k.value for k in BuildEnvKind], default=BuildEnvKind.MANAGED.value,
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
    src.add_argument("--source-date-epoch", type=_epoch_arg, metavar="SECONDS",
                     help="SOURCE_DATE_EPOCH of the build (default: the git commit time of the tree, the tag's; "
                          "for an sdist tree the worker's SOURCE_DATE_EPOCH, without which it is not reproducible)")
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
