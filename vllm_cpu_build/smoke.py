"""``vllm-cpu-build smoke``: install a built wheel into a fresh venv and run it.

First the host CPU must have every ``cpu_flags`` of the variant (and, for
AMX, the kernel must grant tile data); otherwise the wheel's code would die
with SIGILL and the result says "skipped" (exit 3) without running anything.
Then, in a new venv: ``import vllm``, the CPU platform must be selected, the
CPU platform fix must make ``importlib.metadata.version("vllm")`` contain
"cpu", and where the wheel is the fixture (no torch), ``vllm._C.selftest()``
runs every compiled kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from vllm_cpu_build import hostcpu
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.results import SmokeResult
from vllm_cpu_build.variants import ARCHES, Variant, load

# Runs inside the fresh venv; prints one JSON line.  Real vLLM depends on
# torch and its _C needs torch loaded first, so _C is only exercised when the
# installed package does not require torch (the fixture).
PROBE = r'''
import importlib.metadata as md, json, re, sys
r = {"python": sys.version.split()[0]}
def dist_version(prefix):
    for d in md.distributions():
        n = re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower()
        if n == prefix:
            return d
try:
    r["vllm_version_before"] = md.version("vllm")
except md.PackageNotFoundError:
    r["vllm_version_before"] = None
ours = dist_version(sys.argv[1])
r["dist_version"] = ours.version if ours else None
r["requires_torch"] = any(re.match(r"torch\b", q) for q in (ours.requires or [])) if ours else None
import vllm
r["vllm_file"] = vllm.__file__
try:
    r["vllm_version"] = md.version("vllm")
except md.PackageNotFoundError:
    r["vllm_version"] = None
from vllm.platforms import current_platform
r["platform"] = type(current_platform).__name__
r["device_type"] = getattr(current_platform, "device_type", None)
r["is_cpu"] = bool(current_platform.is_cpu())
if not r["requires_torch"]:
    import importlib.util
    if importlib.util.find_spec("vllm._C") is not None:
        from vllm import _C
        if hasattr(_C, "compiled_isa"):
            r["compiled_isa"] = list(_C.compiled_isa())
        if hasattr(_C, "selftest"):
            print("running vllm._C.selftest()", file=sys.stderr, flush=True)
            r["selftest"] = _C.selftest()
print(json.dumps(r))
'''


def wheel_arch(wheel: Path) -> str:
    try:
        _, _, _, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename as exc:
        raise UsageError(f"{wheel.name}: {exc}") from None
    arches = {a for t in tags for a in ARCHES if t.platform.endswith(a)}
    if len(arches) != 1:
        raise UsageError(f"{wheel.name}: platform tag names no single arch of {', '.join(ARCHES)}")
    return arches.pop()


def _interpreter_for(wheel: Path) -> str:
    """This interpreter for abi3 wheels, else the ``python3.X`` the wheel's cpXY tag names."""
    from vllm_cpu_build.build import find_interpreter

    _, _, _, tags = parse_wheel_filename(wheel.name)
    if any(t.abi == "abi3" for t in tags):
        return sys.executable
    cps = sorted({t.interpreter for t in tags if t.interpreter.startswith("cp3")})
    if len(cps) != 1:
        raise UsageError(f"{wheel.name}: cannot tell which Python runs it ({', '.join(cps) or 'no cpXY tag'})")
    return find_interpreter(f"3.{cps[0][3:]}")[0]


def _clean_env() -> dict[str, str]:
    # VLLM_TARGET_DEVICE=cpu would select the CPU platform by itself on newer
    # releases and hide a broken fix; PYTHON* would leak other packages in.
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("VLLM_", "PYTHON")) and k != "VIRTUAL_ENV"}


def _run(cmd: list[str], log, **kw) -> subprocess.CompletedProcess:
    shown = ["<probe>" if c == PROBE else c for c in cmd]
    print(f"  $ {' '.join(shown)}", file=log, flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=_clean_env(), **kw)


def _check(probe: dict, wheel_version: str) -> list[str]:
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


def smoke(variant: Variant, wheel: Path, *, index_url: str | None = None, extra_index_urls: list[str] | None = None,
          cpuinfo: str | None = None, python: str | None = None, log=sys.stderr) -> SmokeResult:
    start = time.monotonic()
    if not wheel.is_file():
        raise UsageError(f"{wheel}: no such wheel")
    name, version, _, _ = parse_wheel_filename(wheel.name)
    if canonicalize_name(name) != canonicalize_name(variant.package):
        raise UsageError(f"{wheel.name} is not a {variant.package} wheel")
    arch = wheel_arch(wheel)
    if arch not in variant.arches:
        raise UsageError(f"{variant.package} is not built for {arch}")
    host = hostcpu.check(variant, arch, cpuinfo)
    print(f"smoke {wheel.name}: {host.reason()}", file=log)
    if not host.ok:
        return SmokeResult("skipped", host.reason(), seconds=time.monotonic() - start,
                           details={"missing_flags": host.missing, "required_flags": host.required})
    py = python or _interpreter_for(wheel)
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-smoke-") as tmp:
        venv = Path(tmp) / "venv"
        # --without-pip + `pip --python`: no ensurepip run per smoke test.
        r = _run([py, "-m", "venv", "--without-pip", str(venv)], log)
        if r.returncode != 0:
            return SmokeResult("failed", f"python -m venv failed: {r.stderr.strip()}",
                               seconds=time.monotonic() - start)
        vpy = str(venv / "bin" / "python")
        if index_url:
            src = ["--index-url", index_url]
            for extra in extra_index_urls or []:
                src += ["--extra-index-url", extra]
        else:
            src = ["--no-index", "--find-links", str(wheel.parent)]
        r = _run([sys.executable, "-m", "pip", "--python", vpy, "install", "--no-cache-dir",
                  "--disable-pip-version-check", *src, str(wheel)], log)
        if r.returncode != 0:
            return SmokeResult("failed", f"pip install failed: {r.stderr.strip()[-2000:]}",
                               seconds=time.monotonic() - start)
        # Run from an empty directory: a vllm/ source tree in cwd must not shadow the install.
        r = _run([vpy, "-c", PROBE, canonicalize_name(variant.package)], log, cwd=tmp)
        if r.stderr.strip():
            print("\n".join("  | " + ln for ln in r.stderr.strip().splitlines()), file=log)
        if r.returncode != 0:
            if r.returncode < 0:
                sig = signal.Signals(-r.returncode).name
                why = f"the wheel's code was killed by {sig}" + (
                    " (an instruction this CPU lacks: the wheel's ISA does not match its name)"
                    if sig == "SIGILL" else "")
            else:
                why = f"import/run failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}"
            return SmokeResult("failed", why, seconds=time.monotonic() - start)
        try:
            probe = json.loads(r.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            return SmokeResult("failed", f"probe printed no result: {r.stdout[-500:]!r}",
                               seconds=time.monotonic() - start)
    bad = _check(probe, str(version))
    # The version a user sees is the wheel's (``pip show``); the "+cpu" one the
    # CPU platform fix writes for vLLM's platform check stays in ``details``.
    res = SmokeResult("failed" if bad else "passed", "; ".join(bad) if bad else
                      f"import vllm on the CPU platform, {variant.package} {probe.get('dist_version')}"
                      + (f", selftest ran {', '.join(probe['selftest'])}" if probe.get("selftest") else ""),
                      probe.get("dist_version"), probe.get("platform"), time.monotonic() - start, probe)
    return res


def run(args: argparse.Namespace) -> SmokeResult:
    variant = load().get(args.variant)
    if args.python and not shutil.which(args.python):
        raise UsageError(f"--python {args.python}: not found")
    log = sys.stderr if args.json else sys.stdout
    res = smoke(variant, Path(args.wheel), index_url=args.index_url, extra_index_urls=args.extra_index_url,
                cpuinfo=args.cpuinfo,
                python=args.python, log=log)
    res.seconds = round(res.seconds, 1)
    print(f"smoke {res.status}: {res.reason} ({res.seconds:.1f} s)", file=log)
    return res


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smoke", help="install a wheel into a fresh venv and run it (skips on a CPU lacking its ISA)",
                       description=__doc__.split("\n\n")[0] + " Exit 0 passed, 1 failed, 3 skipped (this CPU "
                       "lacks the variant's ISA).")
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("wheel", help="the wheel to test")
    p.add_argument("--index-url", help="package index for dependencies (default: --no-index, the wheel's dir)")
    p.add_argument("--extra-index-url", action="append", default=[],
                   help="further index for dependencies (e.g. torch's CPU index), repeatable; with --index-url")
    p.add_argument("--cpuinfo", help=f"also check this cpuinfo file (testing; or ${hostcpu.CPUINFO_ENV}); "
                                      "it can only remove flags, never add ones the CPU lacks")
    p.add_argument("--python", help="interpreter for the venv (default: the one running this)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)
