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
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from vllm_cpu_build import buildtools, hostcpu, provenance
from vllm_cpu_build.enums import Arch, Inference, SmokeStatus
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.helptext import describe
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
if r["requires_torch"]:
    import torch
    r["torch_version"] = torch.__version__
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

# One compiled module of real vLLM, in a process of its own: upstream's x86
# modules (0.17+) all register the torch op namespace "_C", so two in one
# process collide.  load_library dlopens whatever the PyInit name is.
KERNEL = r'''
import json, sys
path, run = sys.argv[1], sys.argv[2] == "1"
r = {"module": path}
import torch
torch.ops.load_library(path)
r["loaded"] = True
stem = path.rsplit("/", 1)[-1].split(".")[0]
ns = next((n for n in ("_C", stem) if hasattr(getattr(torch.ops, n), "rms_norm")), None)
if ns is None:
    r["kernel"] = None
elif run:
    torch.manual_seed(0)
    x = torch.randn(4, 256, dtype=torch.float32)
    w = torch.rand(256, dtype=torch.float32) + 0.5
    out = torch.empty_like(x)
    print(f"calling torch.ops.{ns}.rms_norm from {stem}", file=sys.stderr, flush=True)
    getattr(torch.ops, ns).rms_norm(out, x, w, 1e-6)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    r["kernel"] = f"torch.ops.{ns}.rms_norm"
    r["max_abs_err"] = float((out - ref).abs().max())
    r["ok"] = bool(torch.allclose(out, ref, atol=1e-4, rtol=1e-4))
else:
    r["kernel"] = f"torch.ops.{ns}.rms_norm (not run: this CPU lacks the module's ISA)"
print(json.dumps(r))
'''

# A tiny Llama made here (no download): vLLM's greedy tokens must be Hugging Face's.
INFERENCE = r'''
import json, os, sys, time
work = sys.argv[1]
t0 = time.monotonic()
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
words = ("the cpu wheel runs a tiny model on every core with vectors and caches while the scheduler "
         "batches requests and the kernel computes attention over keys and values").split()
corpus = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(200)]
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=256, special_tokens=["<unk>", "<s>", "</s>"]))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
model_dir = os.path.join(work, "tiny-llama")
fast.save_pretrained(model_dir)
cfg = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                  bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, torch_dtype="float32")
torch.manual_seed(0)
LlamaForCausalLM(cfg).eval().save_pretrained(model_dir, safe_serialization=True)
prompts = ["the cpu wheel runs", "attention over keys and"]
hf = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
want = []
for p in prompts:
    ids = fast(p, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    want.append(out[0, ids.shape[1]:].tolist())
t1 = time.monotonic()
from vllm import LLM, SamplingParams
llm = LLM(model=model_dir, dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
got = [o.outputs[0].token_ids for o in llm.generate(
    prompts, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))]
got = [list(g) for g in got]
print(json.dumps({"hf": want, "vllm": got, "equal": got == want, "model_seconds": round(t1 - t0, 1),
                  "vllm_seconds": round(time.monotonic() - t1, 1)}))
'''


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
    """This interpreter for abi3 wheels, else the ``python3.X`` the wheel's cpXY tag names."""
    _, _, _, tags = parse_wheel_filename(wheel.name)
    if any(t.abi == "abi3" for t in tags):
        return sys.executable
    cps = sorted({t.interpreter for t in tags if t.interpreter.startswith("cp3")})
    if len(cps) != 1:
        raise UsageError(f"{wheel.name}: cannot tell which Python runs it ({', '.join(cps) or 'no cpXY tag'})")
    return buildtools.find_interpreter(f"3.{cps[0][3:]}")[0]


def _clean_env() -> dict[str, str]:
    # VLLM_TARGET_DEVICE=cpu would select the CPU platform by itself on newer
    # releases and hide a broken fix; PYTHON* would leak other packages in.
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("VLLM_", "PYTHON")) and k != "VIRTUAL_ENV"}


def _run(cmd: list[str], log: TextIO, extra_env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    names = {PROBE: "<probe>", KERNEL: "<kernel>", INFERENCE: "<tiny-llama>"}
    shown = [names.get(c, c) for c in cmd]
    print(f"  $ {' '.join(shown)}", file=log, flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**_clean_env(), **(extra_env or {})}, cwd=cwd, timeout=timeout)


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
            vpy = _install(python or _interpreter_for(wheel), wheel, Path(tmp), sources, log)
            probe = _probe(vpy, variant, Path(tmp), log)
            bad = _check(probe, str(version))
            if probe.get("requires_torch") and not bad:
                probe["kernels"], failed = _kernels(variant, arch, version.base_version, wheel, vpy, Path(tmp),
                                                    cpuinfo, log)
                bad += failed
                if not bad and mode is not Inference.OFF:
                    probe["inference"], failed = _tiny_llama(vpy, Path(tmp), log)
                    bad += failed
            elif mode is Inference.ON and not bad:
                bad.append("--inference on, but the wheel is not real vLLM (no torch requirement)")
    except _Failed as exc:
        return SmokeResult(SmokeStatus.FAILED, exc.reason, seconds=time.monotonic() - start, details=exc.details)
    return _verdict(variant, probe, bad, time.monotonic() - start)


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


def _install(py: str, wheel: Path, tmp: Path, sources: list[str], log: TextIO) -> str:
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
    return vpy


def _probe(vpy: str, variant: Variant, tmp: Path, log: TextIO) -> dict[str, Any]:
    """``import vllm`` and what it says about itself (PROBE)."""
    # Run from an empty directory: a vllm/ source tree in cwd must not shadow the install.
    r = _run([vpy, "-c", PROBE, canonicalize_name(variant.package)], log, cwd=tmp)
    if r.stderr.strip():
        print("\n".join("  | " + ln for ln in r.stderr.strip().splitlines()[-40:]), file=log)
    if r.returncode != 0:
        raise _Failed(_died(r, "import"))
    try:
        probe = json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise _Failed(f"probe printed no result: {r.stdout[-500:]!r}") from None
    if not isinstance(probe, dict):
        raise _Failed(f"probe printed no result object: {r.stdout[-500:]!r}")
    return probe


def _kernels(variant: Variant, arch: Arch, version: str, wheel: Path, vpy: str, tmp: Path, cpuinfo: str | None,
             log: TextIO) -> tuple[list[dict[str, Any]], list[str]]:
    """Each compiled module loaded in a process of its own, a kernel called where this CPU can: (results, problems)."""
    flags = hostcpu.read_flags(arch, cpuinfo)
    site = json.loads(subprocess.run([vpy, "-c", "import json, sysconfig; print(json.dumps("
                                      "sysconfig.get_paths()['platlib']))"],
                                     capture_output=True, text=True, check=False).stdout or '""')
    kernels: list[dict[str, Any]] = []
    bad: list[str] = []
    for member in _compiled_modules(wheel):
        runs = _module_runs_here(variant, arch, version, member, flags)
        k = _run([vpy, "-c", KERNEL, str(Path(site) / member), "1" if runs else "0"], log, cwd=tmp)
        if k.returncode != 0:
            bad.append(f"{member}: " + _died(k, "load/kernel"))
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


def _tiny_llama(vpy: str, tmp: Path, log: TextIO) -> tuple[dict[str, Any] | None, list[str]]:
    """The tiny Llama through ``vllm.LLM`` against Hugging Face (INFERENCE): (its result, problems)."""
    ir = _run([vpy, "-c", INFERENCE, str(tmp)], log, cwd=tmp, extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"},
              timeout=1800)
    if ir.stderr.strip():
        print("\n".join("  | " + ln for ln in ir.stderr.strip().splitlines()[-30:]), file=log)
    if ir.returncode != 0:
        return None, ["tiny-model inference: " + _died(ir, "inference")]
    inf = json.loads(ir.stdout.strip().splitlines()[-1])
    if not inf["equal"]:
        return inf, [f"vllm.LLM greedy tokens {inf['vllm']} != Hugging Face's {inf['hf']}"]
    return inf, []


def _verdict(variant: Variant, probe: dict[str, Any], bad: list[str], seconds: float) -> SmokeResult:
    if bad:
        return SmokeResult(SmokeStatus.FAILED, "; ".join(bad), probe.get("dist_version"), probe.get("platform"),
                           seconds, probe)
    ran = []
    if probe.get("kernels"):
        helpers = [k for k in probe["kernels"] if not k.get("kernel")]
        ran.append("kernels " + ", ".join(f"{Path(k['module']).name}" for k in probe["kernels"] if k.get("kernel"))
                   + (f", loaded {len(helpers)} helper module(s)" if helpers else ""))
    if probe.get("inference"):
        ran.append(f"tiny Llama greedy tokens = Hugging Face's ({probe['inference']['vllm_seconds']} s)")
    # The version a user sees is the wheel's (``pip show``); the "+cpu" one the
    # CPU platform fix writes for vLLM's platform check stays in ``details``.
    reason = (f"import vllm on the CPU platform, {variant.package} {probe.get('dist_version')}"
              + (f", selftest ran {', '.join(probe['selftest'])}" if probe.get("selftest") else "")
              + ("; " + "; ".join(ran) if ran else ""))
    return SmokeResult(SmokeStatus.PASSED, reason, probe.get("dist_version"), probe.get("platform"), seconds, probe)


def _died(r: subprocess.CompletedProcess[str], what: str) -> str:
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
        provenance.add_section(Path(args.wheel), provenance.SmokeSection(res.status, res.reason, res.seconds))
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
