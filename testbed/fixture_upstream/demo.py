"""Toolchain demo without Buildbot: every x86_64 variant of the fixture, from scratch.

    python -m testbed.fixture_upstream.demo [--tag v0.12.0] [--workdir DIR]

Makes the fixture upstream repository, then for each variant published for
the tag: clones the tag, and runs ``vllm-cpu-build`` patch, build, verify and
smoke exactly as a worker does (``python -m steps ... --json``). Prints a table
(variant, wheel, ISA found, verify, smoke) and the time of each step.

Exit codes: 0 every wheel verified and smoke passed or was skipped for lack of
the ISA on this CPU; 1 a step failed; 2 bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.fixture_upstream import MIRROR
from testbed.fixture_upstream.make_repo import DEFAULT_TAGS, check_tag, make_fixture_repo
from vllm_cpu_build import variants
from vllm_cpu_build.helptext import Parser

ROOT = Path(__file__).resolve().parents[2]
ARCH = "x86_64"


def _tool(*args: str) -> tuple[int, dict, float, str]:
    """Run one toolchain subcommand; (exit code, JSON, seconds, stderr)."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "vllm_cpu_build", *args, "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    try:
        doc = json.loads(out.stdout) if out.stdout.strip() else {}
    except json.JSONDecodeError:
        doc = {}
    return out.returncode, doc, time.monotonic() - start, out.stderr


def _isa_found(verify_doc: dict) -> str:
    found: set[str] = set()
    for features in verify_doc.get("isa", {}).values():
        found |= {f for f, n in features.items() if n and f.startswith(("AVX2", "AVX512", "AMX", "AVX_VNNI"))}
    return " ".join(sorted(found)) or "-"


def run_variant(repo: Path, tag: str, variant: variants.Variant, work: Path) -> dict:
    row: dict = {"variant": variant.package, "wheel": "-", "isa": "-", "verify": "-", "smoke": "-", "times": {}}
    src = work / variant.package / "src"
    out_dir = work / variant.package / "dist"
    subprocess.run(["git", "clone", "-q", "--branch", tag, "--depth", "1", f"file://{repo}", str(src)],
                   check=True, capture_output=True)
    steps = [
        ("patch", ["patch", "--variant", variant.package, "--src", str(src), "--arch", ARCH]),
        ("build", ["build", "--variant", variant.package, "--src", str(src), "--out", str(out_dir),
                   "--fetch-mirror", str(MIRROR)]),
    ]
    for name, args in steps:
        code, doc, secs, err = _tool(*args)
        row["times"][name] = secs
        if code != 0:
            row[name if name in row else "verify"] = f"{name} FAILED (exit {code})"
            row["error"] = err.strip().splitlines()[-1:] or [""]
            return row
        if name == "build":
            row["wheel"] = Path(doc["wheel"]).name
    wheel = str(out_dir / row["wheel"])
    code, doc, secs, _ = _tool("verify", "--variant", variant.package, "--arch", ARCH, wheel)
    row["times"]["verify"] = secs
    row["isa"] = _isa_found(doc)
    row["verify"] = "ok" if code == 0 else "FAILED: " + doc.get("summary", f"exit {code}")
    code, doc, secs, _ = _tool("smoke", "--variant", variant.package, wheel)
    row["times"]["smoke"] = secs
    row["smoke"] = {0: "passed", 3: "skipped (CPU lacks ISA)"}.get(code, f"FAILED: {doc.get('reason', code)}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m testbed.fixture_upstream.demo", description=__doc__)
    parser.add_argument("--tag", default=DEFAULT_TAGS[-1], help="fixture release to build (default: newest)")
    parser.add_argument("--workdir", type=Path, help="keep the trees and wheels here (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        check_tag(args.tag)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    catalog = variants.load()
    chosen = [v for v in catalog.for_release(args.tag.lstrip("v")) if ARCH in v.arches]
    with tempfile.TemporaryDirectory(prefix="vllm-cpu-demo-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        repo = make_fixture_repo(work / "upstream", sorted({*DEFAULT_TAGS, args.tag}))
        print(f"fixture upstream: {repo} ({time.monotonic() - start:.1f}s)", flush=True)
        rows = []
        for v in chosen:
            print(f"building {v.package} {args.tag} ...", flush=True)
            rows.append(run_variant(repo, args.tag, v, work))
    cols = ("variant", "wheel", "isa", "verify", "smoke")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print()
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    print("\nseconds per step:")
    for r in rows:
        print(f"  {r['variant']:<22}" + "  ".join(f"{k} {t:5.2f}" for k, t in r["times"].items()))
    ok = all(r["verify"] == "ok" and not r["smoke"].startswith("FAILED") for r in rows)
    print(f"\n{'all wheels verified' if ok else 'FAILED'} in {time.monotonic() - start:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
