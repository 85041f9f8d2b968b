"""``vllm-cpu-build smoke``: install a built wheel into a fresh venv and run it.

First the host CPU must have every ``cpu_flags`` of the variant (and, for
AMX, the kernel must grant tile data); otherwise the wheel's code would die
with SIGILL and the result says "skipped" (exit 3) without running anything.
Then, in a new venv:

1. ``pip install`` the wheel **with its real dependencies** from the
   configured indexes: the project index (``--index-url``, else pip's own
   configuration, PyPI by default), ``--extra-index-url`` and the torch index
   when the wheel requires torch; the wheel's directory is a find-links
   source.  When that fails the result quotes pip's own reason (its ERROR
   lines and the resolver's "conflict is caused by" block), not a tail.
2. ``import vllm``: the CPU platform must be selected and the CPU platform
   fix must make ``importlib.metadata.version("vllm")`` contain "cpu".
3. Every compiled module of the wheel (``vllm/_C*.so``) is loaded, each in
   its own process (they register the same torch op namespace), and a
   kernel is called: ``rms_norm`` against torch's own result for real vLLM,
   ``vllm._C.selftest()`` for the fixture (no torch).  A module whose ISA
   this CPU lacks is loaded but not run.  So a torch ABI mismatch or a
   missing ``libnuma.so.1`` fails here.
4. Where the wheel is real vLLM (``--inference auto``, the default) a tiny
   Llama made on the spot (random weights, hidden 128, 4 heads, 2 layers,
   a tokenizer trained locally with ``tokenizers``) runs through
   ``vllm.LLM``; its greedy tokens must equal Hugging Face's.
5. Steps 2-4 once more on the package's floor CPU (variants.json
   ``floor``: a QEMU model, floor.py), in the same venv: a SIGILL there is
   named with module, function and instruction, and fails the smoke.
   "native" floors (QEMU has no AVX-512) say "native only".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from vllm_cpu_build import buildtools, floor, hostcpu, provenance
from vllm_cpu_build.enums import Arch, FloorStatus, Inference, SmokeStatus
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.helptext import describe
from vllm_cpu_build.provenance import FloorCheck
from vllm_cpu_build.results import SmokeResult
from vllm_cpu_build.smoke_scripts import INFERENCE, KERNEL, PROBE
from vllm_cpu_build.variants import ARCHES, Variant, load


def wheel_arch(wheel: Path) -> Arch:
    try:
        _, _, _, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename as exc:
        raise UsageError(f"{wheel.name}: {exc}") from None
    arches = {a for t in tags for a in ARCHES if t.platform.endswith(a)}
    if len(arches) != 1:
        raise UsageError(f"{wheel.name}: platform tag names no single arch of {', '.join(ARCHES)}")
    return arches.pop()


def _interpreter_for(wheel: Path) -> str:
    """This interpreter for an abi3 wheel it can install (else the ``python3.Y`` of its cpXY-abi3 floor),
    the ``python3.X`` the wheel's cpXY tag names for any other."""
    _, _, _, tags = parse_wheel_filename(wheel.name)
    floors = sorted({int(t.interpreter[3:]) for t in tags if t.abi == "abi3" and t.interpreter[3:].isdigit()})
    if floors:
        if sys.version_info[:2] >= (3, floors[0]):
            return sys.executable
        return buildtools.find_interpreter(f"3.{floors[0]}")[0]
    cps = sorted({t.interpreter for t in tags if t.interpreter.startswith("cp3")})
    if len(cps) != 1:
        raise UsageError(f"{wheel.name}: cannot tell which Python runs it ({', '.join(cps) or 'no cpXY tag'})")
    return buildtools.find_interpreter(f"3.{cps[0][3:]}")[0]


def _clean_env() -> dict[str, str]:
    # VLLM_TARGET_DEVICE=cpu would select the CPU platform by itself on newer
    # releases and hide a broken fix; PYTHON* would leak other packages in.
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("VLLM_", "PYTHON")) and k != "VIRTUAL_ENV"}


@dataclass(frozen=True)
class _Venv:
    """The smoke's venv and how its programs run: natively, or on the floor CPU (``emu``)."""

    python: str
    tmp: Path
    site: Path  # its platlib: where the wheel's files are
    emu: floor.Emulator | None = None


def _run(cmd: list[str], log: TextIO, extra_env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float | None = None, emu: floor.Emulator | None = None) -> subprocess.CompletedProcess[str]:
    names = {PROBE: "<probe>", KERNEL: "<kernel>", INFERENCE: "<tiny-llama>"}
    if emu is not None:
        # faulthandler names the Python line a SIGILL stopped; one process keeps vLLM's engine emulated.
        extra_env = {**(extra_env or {}), "PYTHONFAULTHANDLER": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env = {**_clean_env(), **(extra_env or {})}
    for trace in (False, True):
        run = cmd if emu is None else emu.wrap(cmd, trace)
        print(f"  $ {' '.join(names.get(c, c) for c in run)}", file=log, flush=True)
        r = subprocess.run(run, capture_output=True, text=True, check=False, env=env, cwd=cwd, timeout=timeout)
        if emu is None or r.returncode not in floor.SIGILL_EXITS:
            break
        # A SIGILL repeats: once more with QEMU's syscall log, which says where (_died reads it).
    return r


def _check(probe: dict[str, Any], wheel_version: str) -> list[str]:
    """What is wrong with a probe result (empty = passed)."""
    bad = []
    if probe.get("dist_version") != wheel_version:
        bad.append(f"installed version {probe.get('dist_version')} is not the wheel's {wheel_version}")
    if "cpu" not in (probe.get("vllm_version") or ""):
        bad.append(f'importlib.metadata.version("vllm") is {probe.get("vllm_version")!r} after import: '
                   'the CPU platform fix did not work')
    if not probe.get("is_cpu") or probe.get("device_type") != "cpu":
        bad.append(f"current_platform is {probe.get('platform')} (device_type {probe.get('device_type')!r}), "
                   "not the CPU platform")
    st = probe.get("selftest")
    if st is not None and not (st and all(st.values())):
        bad.append(f"vllm._C.selftest() returned {st}")
    return bad


def _requires_torch(wheel: Path) -> bool:
    import zipfile
    from email.parser import HeaderParser

    with zipfile.ZipFile(wheel) as zf:
        meta = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            return False
        msg = HeaderParser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return any(re.match(r"torch\b", r or "") for r in msg.get_all("Requires-Dist") or [])


def _compiled_modules(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        return sorted(n for n in zf.namelist() if re.match(r"^vllm/[^/]+\.so(\.\d+)*$", n))


def _module_runs_here(variant: Variant, arch: Arch, version: str, member: str, host: set[str]) -> bool:
    """Whether this CPU has what the ISA contract says ``member`` uses (x86 names = cpuinfo names)."""
    if arch != "x86_64":
        return True
    rules = [r for r in variant.arches[arch].rules_for(version) if r.matches_module(member)]
    need = {f.lower() for r in rules for f in r.require}
    return need <= host


def install_sources(wheel: Path, *, index_url: str | None, extra_index_urls: list[str] | None,
                    torch_index_url: str | None, no_index: bool) -> list[str]:
    """pip options for installing ``wheel`` with its dependencies."""
    src = ["--find-links", str(wheel.parent)]
    if no_index:
        return ["--no-index", *src]
    if index_url:
        src += ["--index-url", index_url]
    for extra in extra_index_urls or []:
        src += ["--extra-index-url", extra]
    if torch_index_url and _requires_torch(wheel):
        src += ["--extra-index-url", torch_index_url]
    return src


class _Failed(Exception):
    """The smoke test failed before it could run everything: ``reason`` is its result."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


def smoke(variant: Variant, wheel: Path, *, index_url: str | None = None, extra_index_urls: list[str] | None = None,
          torch_index_url: str | None = None, no_index: bool = False, inference: str = Inference.AUTO,
          cpuinfo: str | None = None, python: str | None = None, log: TextIO | None = None) -> SmokeResult:
    """Install ``wheel`` into a fresh venv and run it (module docstring); skipped on a CPU lacking its ISA."""
    start = time.monotonic()
    log = log or sys.stderr
    mode, version, arch = _check_input(variant, wheel, inference)
    host = hostcpu.check(variant, arch, cpuinfo)
    print(f"smoke {wheel.name}: {host.reason()}", file=log)
    if not host.ok:
        return SmokeResult(SmokeStatus.SKIPPED, host.reason(), seconds=time.monotonic() - start,
                           details={"missing_flags": host.missing, "required_flags": host.required})
    if torch_index_url is None:
        torch_index_url = load().project["torch_index_url"]
    sources = install_sources(wheel, index_url=index_url, extra_index_urls=extra_index_urls,
                              torch_index_url=torch_index_url, no_index=no_index)
    try:
        with tempfile.TemporaryDirectory(prefix="vllm-cpu-smoke-") as tmp:
            venv = _install(python or _interpreter_for(wheel), wheel, Path(tmp), sources, log)
            run = _Run(variant, arch, version, wheel, mode, log)
            probe, bad = run.all(venv, hostcpu.read_flags(arch, cpuinfo))
            spec = variant.arches[arch]
            check = (run.floor(venv) if not bad else
                     FloorCheck(FloorStatus.NOT_RUN, spec.floor, "the smoke failed on this CPU first"))
    except _Failed as exc:
        return SmokeResult(SmokeStatus.FAILED, exc.reason, seconds=time.monotonic() - start, details=exc.details)
    return _verdict(variant, probe, bad, check, time.monotonic() - start)


@dataclass(frozen=True)
class _Run:
    """The probe of one wheel: import, every module's kernel, the tiny model (module docstring)."""

    variant: Variant
    arch: Arch
    version: Version
    wheel: Path
    mode: Inference
    log: TextIO

    def all(self, venv: _Venv, flags: set[str]) -> tuple[dict[str, Any], list[str]]:
        """(what the probe saw, problems) on a CPU with ``flags``; _Failed when a program died."""
        probe = _probe(venv, self.variant, self.log)
        bad = _check(probe, str(self.version))
        if probe.get("requires_torch") and not bad:
            probe["kernels"], failed = _kernels(self.variant, self.arch, self.version.base_version, self.wheel,
                                                venv, flags, self.log)
            bad += failed
            if not bad and self.mode is not Inference.OFF:
                probe["inference"], failed = _tiny_llama(venv, self.log)
                bad += failed
        elif self.mode is Inference.ON and not bad:
            bad.append("--inference on, but the wheel is not real vLLM (no torch requirement)")
        return probe, bad

    def floor(self, venv: _Venv) -> FloorCheck:
        """The whole probe again in the same venv (installing runs none of the wheel's code) on the floor CPU."""
        spec = self.variant.arches[self.arch]
        if spec.qemu_floor is None:
            return FloorCheck(FloorStatus.NATIVE_ONLY, spec.floor,
                              "QEMU cannot be this package's oldest CPU: only a host with it shows the floor")
        qemu = floor.qemu_binary(self.arch)
        if qemu is None:
            return FloorCheck(FloorStatus.FAILED, spec.qemu_floor, f"no qemu-{self.arch}-static or qemu-{self.arch} "
                              "on PATH to emulate it (apt-get install qemu-user-static)")
        start = time.monotonic()
        print(f"floor smoke: the probe again on an emulated {spec.qemu_floor} ({qemu})", file=self.log, flush=True)
        emu = floor.Emulator(qemu, spec.qemu_floor, venv.tmp / "floor-strace.log")
        try:
            # The floor CPU has exactly the variant's flags: modules needing more are loaded, not run.
            _, bad = self.all(dataclasses.replace(venv, emu=emu), set(spec.cpu_flags))
        except _Failed as exc:
            bad = [exc.reason]
        seconds = round(time.monotonic() - start, 1)
        if bad:
            return FloorCheck(FloorStatus.FAILED, spec.qemu_floor, "; ".join(bad), seconds)
        return FloorCheck(FloorStatus.PASSED, spec.qemu_floor, f"the probe passed on an emulated {spec.qemu_floor}",
                          seconds)


def _check_input(variant: Variant, wheel: Path, inference: str) -> tuple[Inference, Version, Arch]:
    """(inference mode, the wheel's version, its arch); UsageError for a wheel this variant cannot smoke."""
    if not wheel.is_file():
        raise UsageError(f"{wheel}: no such wheel")
    try:
        mode = Inference(inference)
    except ValueError:
        raise UsageError(f"--inference {inference!r}: auto, on or off") from None
    name, version, _, _ = parse_wheel_filename(wheel.name)
    if canonicalize_name(name) != canonicalize_name(variant.package):
        raise UsageError(f"{wheel.name} is not a {variant.package} wheel")
    arch = wheel_arch(wheel)
    if arch not in variant.arches:
        raise UsageError(f"{variant.package} is not built for {arch}")
    return mode, version, arch


def _install(py: str, wheel: Path, tmp: Path, sources: list[str], log: TextIO) -> _Venv:
    """A fresh venv in ``tmp`` with the wheel and its real dependencies; its interpreter."""
    venv = tmp / "venv"
    # --without-pip + `pip --python`: no ensurepip run per smoke test.
    r = _run([py, "-m", "venv", "--without-pip", str(venv)], log)
    if r.returncode != 0:
        raise _Failed(f"python -m venv failed: {r.stderr.strip()}")
    vpy = str(venv / "bin" / "python")
    r = _run([sys.executable, "-m", "pip", "--python", vpy, "install", "--disable-pip-version-check",
              "--progress-bar", "off", *sources, str(wheel)], log)
    if r.returncode != 0:
        from vllm_cpu_build.buildenv import pip_errors

        raise _Failed("pip install failed: " + pip_errors(r.stdout + "\n" + r.stderr), {"pip_sources": sources})
    site = json.loads(subprocess.run([vpy, "-c", "import json, sysconfig; print(json.dumps("
                                      "sysconfig.get_paths()['platlib']))"],
                                     capture_output=True, text=True, check=False).stdout or '""')
    return _Venv(vpy, tmp, Path(site))


def _probe(venv: _Venv, variant: Variant, log: TextIO) -> dict[str, Any]:
    """``import vllm`` and what it says about itself (PROBE)."""
    # Run from an empty directory: a vllm/ source tree in cwd must not shadow the install.
    r = _run([venv.python, "-c", PROBE, canonicalize_name(variant.package)], log, cwd=venv.tmp, emu=venv.emu)
    if r.stderr.strip():
        print("\n".join("  | " + ln for ln in r.stderr.strip().splitlines()[-40:]), file=log)
    if r.returncode != 0:
        raise _Failed(_died(r, "import", venv))
    try:
        probe = json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise _Failed(f"probe printed no result: {r.stdout[-500:]!r}") from None
    if not isinstance(probe, dict):
        raise _Failed(f"probe printed no result object: {r.stdout[-500:]!r}")
    return probe


def _kernels(variant: Variant, arch: Arch, version: str, wheel: Path, venv: _Venv, flags: set[str],
             log: TextIO) -> tuple[list[dict[str, Any]], list[str]]:
    """Each compiled module loaded in a process of its own, a kernel called where this CPU can: (results, problems)."""
    kernels: list[dict[str, Any]] = []
    bad: list[str] = []
    for member in _compiled_modules(wheel):
        runs = _module_runs_here(variant, arch, version, member, flags)
        k = _run([venv.python, "-c", KERNEL, str(venv.site / member), "1" if runs else "0"], log, cwd=venv.tmp,
                 emu=venv.emu)
        if k.returncode != 0:
            bad.append(f"{member}: " + _died(k, "load/kernel", venv))
            continue
        res = json.loads(k.stdout.strip().splitlines()[-1])
        kernels.append(res)
        if res.get("kernel") is None:
            # vLLM's op libraries are _C*; helpers (0.27+: fs_io_C, spinloop) only have to load.
            if Path(member).name.startswith("_C"):
                bad.append(f"{member}: loaded, but registers no rms_norm kernel to call")
        elif "ok" in res and not res["ok"]:
            bad.append(f"{member}: {res['kernel']} differs from torch (max error {res['max_abs_err']})")
    if not kernels:
        bad.append("the wheel has no compiled vLLM module")
    return kernels, bad


def _tiny_llama(venv: _Venv, log: TextIO) -> tuple[dict[str, Any] | None, list[str]]:
    """The tiny Llama through ``vllm.LLM`` against Hugging Face (INFERENCE): (its result, problems)."""
    ir = _run([venv.python, "-c", INFERENCE, str(venv.tmp)], log, cwd=venv.tmp,
              extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"}, timeout=1800 if venv.emu is None else 7200, emu=venv.emu)
    if ir.stderr.strip():
        print("\n".join("  | " + ln for ln in ir.stderr.strip().splitlines()[-30:]), file=log)
    if ir.returncode != 0:
        return None, ["tiny-model inference: " + _died(ir, "inference", venv)]
    inf = json.loads(ir.stdout.strip().splitlines()[-1])
    if not inf["equal"]:
        return inf, [f"vllm.LLM greedy tokens {inf['vllm']} != Hugging Face's {inf['hf']}"]
    return inf, []


def _verdict(variant: Variant, probe: dict[str, Any], bad: list[str], check: FloorCheck,
             seconds: float) -> SmokeResult:
    if check.status is FloorStatus.FAILED:
        bad = [*bad, f"on its floor CPU {check.cpu}: {check.reason}"]
    if bad:
        return SmokeResult(SmokeStatus.FAILED, "; ".join(bad), probe.get("dist_version"), probe.get("platform"),
                           seconds, probe, check)
    ran = []
    if probe.get("kernels"):
        helpers = [k for k in probe["kernels"] if not k.get("kernel")]
        ran.append("kernels " + ", ".join(f"{Path(k['module']).name}" for k in probe["kernels"] if k.get("kernel"))
                   + (f", loaded {len(helpers)} helper module(s)" if helpers else ""))
    if probe.get("inference"):
        ran.append(f"tiny Llama greedy tokens = Hugging Face's ({probe['inference']['vllm_seconds']} s)")
    ran.append(f"floor {check.cpu} {check.status}" if check.status is FloorStatus.PASSED else f"floor {check.status}")
    # The version a user sees is the wheel's (``pip show``); the "+cpu" one the
    # CPU platform fix writes for vLLM's platform check stays in ``details``.
    reason = (f"import vllm on the CPU platform, {variant.package} {probe.get('dist_version')}"
              + (f", selftest ran {', '.join(probe['selftest'])}" if probe.get("selftest") else "")
              + "; " + "; ".join(ran))
    return SmokeResult(SmokeStatus.PASSED, reason, probe.get("dist_version"), probe.get("platform"), seconds, probe,
                       check)


def _died(r: subprocess.CompletedProcess[str], what: str, venv: _Venv | None = None) -> str:
    emu = venv.emu if venv is not None else None
    if emu is not None and r.returncode in floor.SIGILL_EXITS:
        # Never a bare exit code: where QEMU's log says it stopped, and the Python line running.
        fault = floor.find_fault(emu.log, venv.tmp) if venv is not None else None
        text = fault.describe(venv.site if venv is not None else None) if fault else \
            "killed by SIGILL (QEMU's log names no faulting instruction)"
        args = [str(a) for a in r.args]
        line = floor.python_line(r.stderr, args[args.index("-c") + 1] if "-c" in args[:-1] else "")
        return f"{text}, which {emu.cpu} lacks" + (f"; Python at {line}" if line else "")
    if r.returncode < 0:
        sig = signal.Signals(-r.returncode).name
        return f"the wheel's code was killed by {sig}" + (
            " (an instruction this CPU lacks: the wheel's ISA does not match its name)" if sig == "SIGILL" else "")
    return f"{what} failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}"


def run(args: argparse.Namespace) -> SmokeResult:
    variant = load().get(args.variant)
    if args.python and not shutil.which(args.python):
        raise UsageError(f"--python {args.python}: not found")
    log = sys.stderr if args.json else sys.stdout
    res = smoke(variant, Path(args.wheel), index_url=args.index_url, extra_index_urls=args.extra_index_url,
                torch_index_url=args.torch_index_url, no_index=args.no_index, inference=args.inference,
                cpuinfo=args.cpuinfo, python=args.python, log=log)
    res.seconds = round(res.seconds, 1)
    print(f"smoke {res.status}: {res.reason} ({res.seconds:.1f} s)", file=log)
    try:
        provenance.add_section(Path(args.wheel),
                               provenance.SmokeSection(res.status, res.reason, res.seconds, res.floor))
    except provenance.ProvenanceError as exc:
        print(f"warning: record beside the wheel not updated: {exc}", file=sys.stderr)
    return res


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("smoke", help="install a wheel into a fresh venv and run it (skips on a CPU lacking its ISA)",
                       description=describe(__doc__, "Exit 0 passed, 1 failed, 3 skipped (this CPU lacks the "
                                                     "variant's ISA)."))
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("wheel", help="the wheel to test")
    p.add_argument("--index-url", help="the project's package index (default: pip's configuration, PyPI)")
    p.add_argument("--extra-index-url", action="append", default=[],
                   help="further index for dependencies, repeatable")
    p.add_argument("--torch-index-url", help="torch's index, used when the wheel requires torch (default: "
                                             "variants.json torch_index_url; '' = none)")
    p.add_argument("--no-index", action="store_true",
                   help="install from the wheel's directory only (no index; dependencies must be there)")
    p.add_argument("--inference", choices=[m.value for m in Inference], default=Inference.AUTO.value,
                   help="tiny-model run through vllm.LLM vs Hugging Face: auto = for real vLLM (default)")
    p.add_argument("--cpuinfo", help=f"also check this cpuinfo file (testing; or ${hostcpu.CPUINFO_ENV}); "
                                      "it can only remove flags, never add ones the CPU lacks")
    p.add_argument("--python", help="interpreter for the venv (default: the one running this)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)
