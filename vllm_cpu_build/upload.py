"""``vllm-cpu-build upload``: publish checked wheels with twine, never twice.

Every wheel is verified again right before the upload (all ``verify``
checks, arch from its platform tag): the Buildbot factory already stops
after a failed verify, but a wheel that is not what its name says must
never be published, whatever ran before; one failing wheel uploads none.

Before uploading, the package's page on the index's simple API (PEP 691
JSON, HTML fallback, so PyPI and pypiserver both work) is read and every
wheel already listed is skipped.  Credentials come from the environment
(``TWINE_USERNAME``/``TWINE_PASSWORD``, set by the Buildbot step from a
secret) and are never put on a command line.  ``--dry-run`` uploads nothing.

The index client is ``vllm_cpu_build.index`` (shared with the master).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from vllm_cpu_build.errors import StepFailed, UsageError
from vllm_cpu_build.index import IndexFile, list_index_files, wheel_covers
from vllm_cpu_build.results import NotUploaded, UploadedFile, UploadResult

__all__ = ["IndexFile", "list_index_files", "verify_gate", "wheel_covers"]

def verify_gate(wheels: list[Path], variant, manylinux: str | None = None) -> list[dict]:
    """[{"file", "reason"}] for every wheel that fails ``verify`` as ``variant`` (arch from its tag)."""
    from vllm_cpu_build.verify import platform_arch, verify_wheel

    refused = []
    for w in wheels:
        arches = sorted({platform_arch(t.platform) for t in parse_wheel_filename(w.name)[3]})
        if len(arches) != 1 or arches[0] not in variant.arches:
            refused.append({"file": w.name, "reason": f"platform tags name {', '.join(arches)}; "
                                                      f"{variant.package} is built for {', '.join(variant.arches)}"})
            continue
        result = verify_wheel(w, variant, arches[0], manylinux=manylinux)
        print(f"{w.name}: verify {'ok' if result.ok else 'FAILED'}: {result.summary}", file=sys.stderr)
        if not result.ok:
            refused.append({"file": w.name, "reason": result.summary})
    return refused


def _run(args: argparse.Namespace) -> UploadResult:
    from vllm_cpu_build.variants import load

    variant = load().get(args.variant)
    wheels = [Path(w) for w in args.wheels]
    for w in wheels:
        if not w.is_file():
            raise UsageError(f"{w}: no such wheel")
        try:
            name = parse_wheel_filename(w.name)[0]
        except InvalidWheelFilename as exc:
            raise UsageError(f"{w.name}: not a wheel file name: {exc}") from None
        if canonicalize_name(name) != canonicalize_name(variant.package):
            raise UsageError(f"{w.name}: belongs to {name}, not to variant {variant.package}")

    report = UploadResult(variant.package, args.repository_url, args.dry_run)
    refused = verify_gate(wheels, variant, args.manylinux)
    if refused:
        raise StepFailed("nothing uploaded; failed verify: " + "; ".join(f"{r['file']}: {r['reason']}"
                                                                         for r in refused), refused=refused)
    existing = {f.filename: f.url for f in list_index_files(args.simple_url, variant.package)}
    todo = []
    for w in wheels:
        if w.name in existing:
            report.skipped.append(NotUploaded(w.name, "already in the index", existing[w.name]))
            print(f"{w.name}: already in the index, not uploaded again", file=sys.stderr)
        elif args.dry_run:
            report.skipped.append(NotUploaded(w.name, "dry run"))
            print(f"{w.name}: dry run, would upload to {args.repository_url}", file=sys.stderr)
        else:
            todo.append(w)
    if todo:
        if not os.environ.get("TWINE_PASSWORD"):
            raise UsageError("no credentials: TWINE_PASSWORD is not set (the index token secret)")
        cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
               "--repository-url", args.repository_url, *map(str, todo)]
        print("running: " + " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env=os.environ.copy(), check=False)
        if proc.returncode != 0:
            raise StepFailed(f"twine upload exited {proc.returncode}")
        listed = {f.filename: f.url for f in list_index_files(args.simple_url, variant.package)}
        for w in todo:
            if w.name not in listed:
                raise StepFailed(f"{w.name}: uploaded but not listed at {args.simple_url}")
            report.uploaded.append(UploadedFile(w.name, listed[w.name]))
            print(f"{w.name}: uploaded, {listed[w.name]}", file=sys.stderr)
    out = sys.stderr if args.json else sys.stdout
    for u in report.uploaded:
        print(f"uploaded {u.file}: {u.url}", file=out)
    for s in report.skipped:
        print(f"skipped {s.file}: {s.reason}", file=out)
    return report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upload", help="upload wheels with twine unless the index already has them",
        description="Verify every wheel again, then upload with twine what the index does not list yet. "
                    "Credentials come from the environment only: TWINE_USERNAME and TWINE_PASSWORD (the Buildbot "
                    "step sets them from the index token secret); they never appear on a command line. "
                    "Exit 1 when a wheel fails verify (none is uploaded) or twine fails, 2 on bad input.")
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--repository-url", required=True, help="twine upload URL (legacy upload API)")
    p.add_argument("--simple-url", required=True, help="the index's simple API root, to skip existing files")
    p.add_argument("--dry-run", action="store_true", help="check and report, upload nothing")
    p.add_argument("--manylinux", help="policy the wheels are verified against "
                                       "(default: variants.json manylinux_policy)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("wheels", nargs="+", help="wheel files")
    p.set_defaults(func=_run)
