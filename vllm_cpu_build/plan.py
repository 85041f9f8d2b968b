"""``vllm-cpu-build plan``: which wheels a source tree of vLLM should become.

For an upstream tree (sdist or git checkout) and a selection of variants,
arches and Python versions, list every build with its exact environment and
the wheel file it must produce, and every variant left out with the reason.
Nothing is built or changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from vllm_cpu_build import abi3, reqfiles, specs, upstream
from vllm_cpu_build.cli import ARCH_CHOICES, arches_arg, version_arg
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.helptext import describe
from vllm_cpu_build.results import PlannedBuild, PlannedWheel, PlanResult, SkippedBuild
from vllm_cpu_build.variants import ARCHES, Catalog, Variant, format_spec, load


def requires_python(src: Path) -> str:
    """``[project] requires-python`` of the tree's pyproject.toml."""
    try:
        path, data = reqfiles.pyproject(src)
    except reqfiles.RequirementsError as exc:
        raise UsageError(str(exc)) from None
    project = data.get("project")
    spec = project.get("requires-python") if isinstance(project, dict) else None
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"{path}: [project] has no requires-python")
    try:
        SpecifierSet(spec)
    except InvalidSpecifier:
        raise UsageError(f"{path}: requires-python {spec!r} is not a version specifier") from None
    return spec


def pythons_for(spec: str, requested: str = "auto") -> list[str]:
    """Python versions to build for; an explicit request outside ``spec`` is an error."""
    try:
        return specs.pythons_for(spec, requested, strict=True)
    except specs.SpecError as exc:
        raise UsageError(f"--python-versions: {exc}") from None


def wheel_glob(variant: Variant, arch: Arch, full_version: str, tag: str | None = None) -> str:
    """Filename pattern of a wheel a build must produce (after build's retagging); ``tag`` None: any CPython's."""
    plat = f"{load().project['manylinux_policy']}_{arch}"
    return f"{variant.dist_name}-{full_version}-{tag or 'cp3*'}-{plat}.whl"


def planned_wheels(variant: Variant, arch: Arch, full_version: str, pythons: list[str],
                   floor: str) -> list[PlannedWheel]:
    """The wheels serving ``pythons``: one stable-ABI wheel from ``floor`` on, one per older Python."""
    out = []
    for t in abi3.wheel_targets(pythons, floor):
        cp = abi3.python_tag(t.python)
        tag = f"{abi3.python_tag(floor)}-{abi3.ABI_TAG}" if t.abi3 else f"{cp}-{cp}"
        out.append(PlannedWheel(t.python, list(t.serves), tag, wheel_glob(variant, arch, full_version, tag)))
    return out


def abi3_floor(src: Path) -> str:
    """The stable ABI of the tree's extension modules (``abi3.stable_abi``); a tree without any is an error."""
    found = abi3.stable_abi(src)
    if not found.modules:
        raise UsageError(f"{src}: no extension module with USE_SABI in {abi3.CMAKELISTS} or {abi3.CPU_CMAKE}; "
                         "cannot tell which Pythons share a stable-ABI wheel")
    return found.floor


def _split(value: str | None) -> list[str] | None:
    return list(dict.fromkeys(x.strip() for x in value.split(",") if x.strip())) if value else None


def make_plan(version: str, requires: str, *, variants: list[str] | None = None, arches: list[Arch] | None = None,
              python_versions: str = "auto", postfix: str = "", catalog: Catalog | None = None,
              floor: str = abi3.MINIMUM) -> PlanResult:
    """The builds of upstream ``version`` (requires-python ``requires``, stable-ABI ``floor``: ``abi3_floor``)."""
    catalog = catalog or load()
    try:
        v = specs.parse_version(version)
        full = specs.final_version(version, postfix)
    except specs.SpecError as exc:
        raise UsageError(f"--version / --version-postfix: {exc}") from None
    try:
        line = upstream.release_line(v)
    except upstream.UnsupportedRelease as exc:
        raise UsageError(str(exc)) from None
    for a in arches or []:
        if a not in ARCHES:
            raise UsageError(f"--arches: unknown arch {a!r}; known: {', '.join(ARCHES)}")
    wanted = [Arch(a) for a in arches] if arches else list(ARCHES)
    chosen = [catalog.get(n) for n in variants] if variants else list(catalog.variants)
    pythons = pythons_for(requires, python_versions)
    plan = PlanResult(str(v), full, line.name, requires, pythons)
    for var in chosen:
        if not var.applies_to(v):
            plan.skipped.append(SkippedBuild(var.package, None,
                                             f"variants.json releases {format_spec(var.releases)} excludes vLLM {v}"))
            continue
        for arch in wanted:
            if arch not in var.arches:
                if arches:  # asked for explicitly: say why it is not built
                    plan.skipped.append(SkippedBuild(var.package, arch,
                                                     f"not built for {arch} (only {', '.join(var.arches)})"))
                continue
            try:
                env = upstream.build_env(var, arch, str(v), postfix)
            except upstream.UnsupportedRelease as exc:
                plan.skipped.append(SkippedBuild(var.package, arch, str(exc)))
                continue
            # One compile per wheel: the stable-ABI one serves every Python from the floor on.
            wheels = planned_wheels(var, arch, full, pythons, floor)
            one_abi3 = len(wheels) == 1 and wheels[0].tag.endswith(abi3.ABI_TAG)
            plan.builds.append(PlannedBuild(
                variant=var.package, arch=arch, pythons=pythons, abi3=one_abi3, env=env,
                build_pythons=[w.python for w in wheels],
                wheel_glob=wheels[0].wheel_glob if len(wheels) == 1 else wheel_glob(var, arch, full),
                abi3_floor=floor, wheels=wheels))
    return plan


def run(args: argparse.Namespace) -> PlanResult:
    src = Path(args.src)
    if not src.is_dir():
        raise UsageError(f"--src {src}: not a directory")
    version = args.version
    if not version:
        from vllm_cpu_build.patch import detect_version

        version = detect_version(src)
    plan = make_plan(version, requires_python(src), variants=_split(args.variants), arches=args.arches,
                     python_versions=args.python_versions, postfix=args.version_postfix or "", floor=abi3_floor(src))
    out = sys.stderr if args.json else sys.stdout
    recipe = upstream.release_line(plan.version)
    print(f"vLLM {plan.version} (upstream recipe {recipe.name}, for {recipe.span}), requires-python "
          f"{plan.requires_python}: Python {', '.join(plan.pythons)}", file=out)
    for b in plan.builds:
        for w in b.wheels:
            print(f"  build {b.variant} {b.arch} with Python {w.python} (for {', '.join(w.serves)}): {w.wheel_glob}",
                  file=out)
    for s in plan.skipped:
        print(f"  skip  {s.variant}{' ' + s.arch if s.arch else ''}: {s.reason}", file=out)
    return plan


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="list the builds (variant x arch x Python) for a vLLM source tree",
                       description=describe(__doc__, "Nothing is built or changed."))
    p.add_argument("--src", required=True, help="upstream vLLM source tree (sdist or git checkout)")
    p.add_argument("--variants", help="comma-separated package names (default: all in variants.json)")
    p.add_argument("--arches", type=arches_arg, help=f"comma-separated, of {', '.join(ARCH_CHOICES)} (default: all)")
    p.add_argument("--python-versions", default="auto", help="auto | 3.11 | 3.10,3.12 | 3.10-3.13")
    p.add_argument("--version", type=version_arg, help="upstream version (default: from PKG-INFO or the git tag)")
    p.add_argument("--version-postfix", default="", help=".postN, .devN, aN, bN or rcN")
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    p.set_defaults(func=run)
