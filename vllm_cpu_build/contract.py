"""The claim checks of ``verify``: is the code what the name says, and was it built against what it pins?

  isa        the variant's ISA contract (variants.json) on vLLM's own compiled
             modules (ELF members under vllm/), decoded with ``vllm_cpu_build.isa``
  provenance the build record in the dist-info (vllm_cpu_build.json) names this
             package and arch, and the torch the wheel was compiled against
             satisfies the torch its METADATA pins (a wheel that requires torch
             and carries no record cannot tell, and fails)
"""

from __future__ import annotations

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from vllm_cpu_build import isa as isa_mod
from vllm_cpu_build import provenance
from vllm_cpu_build.variants import ContractRule
from vllm_cpu_build.wheelcheck import CheckFailed, Context


def _short_require(req: tuple[str, ...]) -> str:
    """('AVX512F','AVX512BW','AVX512_VNNI') -> 'AVX512F/BW/VNNI'."""
    groups: list[list[str]] = []
    for f in req:
        prefix = next((p for p in ("AVX512", "AMX_") if f.startswith(p)), None)
        if groups and prefix and groups[-1][0].startswith(prefix):
            groups[-1].append(f[len(prefix):].lstrip("_"))
        else:
            groups.append([f])
    return ", ".join("/".join(g) for g in groups)


def _short_forbid(forbid: tuple[str, ...]) -> str:
    """('AVX512_VNNI','AVX512_BF16','AMX_*') -> 'VNNI/BF16/AMX'."""
    return "/".join(p.rstrip("*").rstrip("_").removeprefix("AVX512_") for p in forbid)


def _rule_summary(rule: ContractRule, several: bool) -> str:
    text = _short_require(rule.require) + (f"; no {_short_forbid(rule.forbid)}" if rule.forbid else "")
    if several:
        stem = rule.modules.removeprefix("vllm/").split(".")[0].rstrip("*")
        text = f"{stem}: {text}"
    return text


def check_isa(ctx: Context) -> str:
    vtext = (ctx.metadata or {}).get("version") or (str(ctx.filename[1]) if ctx.filename else "")
    try:
        base = Version(vtext).base_version
    except InvalidVersion:
        raise CheckFailed(f"no valid version to choose the contract by (got {vtext!r})") from None
    rules = ctx.variant.arches[ctx.arch].rules_for(base)
    if not rules:
        raise CheckFailed(f"variants.json has no ISA contract for {ctx.variant.package} {ctx.arch} at {base}")
    modules = [m for m in ctx.wheel.elf_members if m.startswith("vllm/")]
    for m in modules:
        ctx.isa[m] = isa_mod.scan_elf(ctx.wheel.elf(m))
    problems: list[str] = []
    lines: list[str] = [f"contract for {base}: " + "; ".join(r.describe() for r in rules)]
    matched_any: set[str] = set()
    for rule in rules:
        matched = [m for m in modules if rule.matches_module(m)]
        if not matched:
            if rule.optional:
                continue
            found = ", ".join(modules) or "none"
            problems.append(f"rule {rule.modules!r} matched no module (vllm ELF members: {found})")
            continue
        for m in matched:
            matched_any.add(m)
            rep = ctx.isa[m]
            present = {f for f, n in rep.features.items() if n}
            missing = rule.missing(present)
            forbidden = rule.forbidden(present)
            counts = " ".join(f"{f}={rep.features.get(f, 0)}" for f in rule.require)
            if rep.note:
                problems.append(f"{m}: {rep.note}")
            if missing:
                problems.append(f"{m}: lacks required {', '.join(missing)}")
            if forbidden:
                problems.append(f"{m}: contains forbidden " + ", ".join(f"{f}={rep.features[f]}" for f in forbidden))
            lines.append(f"{m} [{rep.arch}, {rep.instructions} instr.]: {counts}; forbidden found: "
                         + (", ".join(forbidden) or "none"))
    for m in modules:
        if m not in matched_any:
            problems.append(f"{m}: matched no contract rule (add one to variants.json)")
    if problems:
        raise CheckFailed(problems + lines)
    shown = [r for r in rules if r.require] or rules  # helper modules' rules (require nothing): in the log only
    ctx.isa_summary = "; ".join(_rule_summary(r, len(shown) > 1) for r in shown)
    return "ISA ok: " + ctx.isa_summary + " | " + " | ".join(lines)


def _torch_pins(ctx: Context) -> list[Requirement]:
    """The torch requirements METADATA makes on this arch (Linux)."""
    if ctx.metadata is None:
        ctx.metadata = dict(parse_email(ctx.file_text(f"{ctx.dist_info}/METADATA"))[0])
    pins = []
    for line in ctx.metadata.get("requires_dist", []) or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == "torch" and (req.marker is None or req.marker.evaluate(
                {"platform_machine": ctx.arch, "sys_platform": "linux", "platform_system": "Linux"})):
            pins.append(req)
    return pins


def _record_problems(ctx: Context, rec: provenance.Record, pins: list[Requirement]) -> list[str]:
    problems = []
    if canonicalize_name(rec.package) != canonicalize_name(ctx.variant.package):
        problems.append(f"record is for {rec.package!r}, not {ctx.variant.package}")
    if rec.arch != ctx.arch:
        problems.append(f"record is for {rec.arch!r}, not {ctx.arch}")
    built = rec.torch.built_against
    for pin in pins:
        try:
            ok = built is not None and pin.specifier.contains(Version(built), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"compiled against torch {built}, but METADATA pins {pin}: the wheel would load a "
                            "torch it was not built for")
    if pins and not rec.torch.matches and not problems:
        problems.append(f"the build recorded a torch mismatch (pin {rec.torch.pin}, built against {built})")
    return problems


def check_provenance(ctx: Context) -> str:
    pins = _torch_pins(ctx)
    name = f"{ctx.dist_info}/{provenance.MEMBER}"
    if name not in ctx.wheel.members:
        if pins:
            raise CheckFailed(f"the wheel requires {pins[0]} but carries no build record ({name}): "
                              "which torch it was compiled against is unknown")
        return "no torch requirement; no build record"
    try:
        rec = provenance.parse(ctx.file_text(name), name)
    except provenance.ProvenanceError as exc:
        raise CheckFailed(str(exc)) from None
    problems = _record_problems(ctx, rec, pins)
    if problems:
        raise CheckFailed(problems)
    return (f"built against torch {rec.torch.built_against}" if pins else "no torch requirement") + \
        (f"; {rec.build.compiler}" if rec.build.compiler else "") + \
        (f"; binaries need {rec.platform.needed}" if rec.platform and rec.platform.needed else "")
