"""Generate the detector's copy of variants.json.

The detector is installed on machines without this repository, so it carries
the little it needs from ``variants.json`` (package names, required CPU
flags, release ranges, the torch CPU index) and from
``vllm_cpu_build/upstream.py`` (the newest release line checked) in a generated module,
``src/vllm_cpu_detect/_variants.py``. Nobody edits that file by hand:

    python detector/sync_data.py          # rewrite it from variants.json
    python detector/sync_data.py --check  # exit 1 if it is stale

``tests/unit/detector`` runs the same comparison, so a change to variants.json
without regenerating fails the suite instead of shipping a second truth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
TARGET = HERE / "src" / "vllm_cpu_detect" / "_variants.py"

HEADER = '''\
# ruff: noqa: E501
"""Variant data for the detector, generated from the repository's variants.json.

Do not edit: run ``python detector/sync_data.py`` from the repository root.
The test suite fails when this file disagrees with variants.json.
"""
'''


def derive(variants_path: str | Path | None = None) -> dict:
    """The detector's view of variants.json, read through the validated loader."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from vllm_cpu_build.upstream import NEWEST_CHECKED_RELEASE
        from vllm_cpu_build.variants import load
    finally:
        sys.path.remove(str(REPO_ROOT))
    sys.path.insert(0, str(HERE / "src"))
    try:
        from vllm_cpu_detect.releases import parse_release, parse_specifier
    finally:
        sys.path.remove(str(HERE / "src"))

    catalog = load(variants_path)
    variants = []
    for v in catalog.variants:
        spec = str(v.releases)
        # The run-time evaluator knows only >= and <; refuse anything else
        # here, at generation time, rather than answer wrongly later.
        parse_specifier(spec)
        variants.append({
            "package": v.package,
            "short": v.short,
            "summary": v.summary,
            "target_cpus": v.target_cpus,
            "releases": ",".join(sorted(spec.split(","), key=lambda s: (s[0] != ">", s))),
            "cpu_flags": {arch: list(a.cpu_flags) for arch, a in v.arches.items()},
        })
    project = catalog.project
    for key in ("first_release", "unified_x86_release"):
        parse_release(project[key])
    parse_release(NEWEST_CHECKED_RELEASE)
    return {
        "TORCH_INDEX_URL": project["torch_index_url"],
        "FIRST_RELEASE": project["first_release"],
        "UNIFIED_X86_RELEASE": project["unified_x86_release"],
        # Past this release line the packages that exist are not known yet.
        "NEWEST_KNOWN_RELEASE": NEWEST_CHECKED_RELEASE,
        "VARIANTS": variants,
    }


def render(data: dict) -> str:
    # JSON of strings, lists and objects is also a valid Python literal, and
    # reads better than pprint's output.
    lines = [HEADER]
    for key, value in data.items():
        lines.append(f"{key} = {json.dumps(value, indent=4, ensure_ascii=False)}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated module is stale")
    parser.add_argument("--variants-file", help="variants.json to read (default: the repository's)")
    args = parser.parse_args(argv)
    text = render(derive(args.variants_file))
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if current != text:
            print(f"{TARGET.relative_to(REPO_ROOT)} is stale: run python detector/sync_data.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text)
        print(f"wrote {TARGET.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
