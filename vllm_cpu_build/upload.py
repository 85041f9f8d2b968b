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

The index helpers here are also used by the master to decide what is
already published.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from vllm_cpu_build.cli import EXIT_FAIL, EXIT_OK, UsageError

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def list_index_files(simple_url: str, project: str, timeout: float = 30) -> list[IndexFile]:
    """Files the index lists for ``project``; [] when the project does not exist yet."""
    page = simple_url.rstrip("/") + "/" + canonicalize_name(project) + "/"
    resp = requests.get(page, headers={"Accept": f"{SIMPLE_JSON}, text/html;q=0.1"}, timeout=timeout)
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    base = resp.url or page
    if resp.headers.get("Content-Type", "").startswith(SIMPLE_JSON):
        return [IndexFile(f["filename"], urljoin(base, f["url"])) for f in resp.json().get("files", [])]
    parser = _Anchors()
    parser.feed(resp.text)
    out = []
    for href, text in parser.links:
        name = text or Path(urlsplit(href).path).name
        out.append(IndexFile(name, urljoin(base, href)))
    return out


def wheel_covers(filename: str, version: str, arch: str, python: str | None = None,
                 include_posts: bool = True) -> bool:
    """Whether the wheel ``filename`` already provides (version, arch, python).

    ``include_posts``: a ``.postN`` of the version counts (a re-release of the
    same upstream code).  ``python`` None = any; an abi3 wheel for cp3X
    covers every later CPython.
    """
    try:
        _, wv, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    want = Version(version)
    same = wv == want or (
        include_posts and wv.is_postrelease and wv.release == want.release
        and wv.pre == want.pre and wv.dev is None and want.post is None
    )
    if not same:
        return False
    want_py = int(python.split(".")[1]) if python else None
    for t in tags:
        if not (t.platform == arch or t.platform.endswith("_" + arch)):
            continue
        if want_py is None:
            return True
        if not t.interpreter.startswith("cp3"):
            continue
        minor = int(t.interpreter[3:]) if t.interpreter[3:].isdigit() else -1
        if (t.abi == "abi3" and minor <= want_py) or minor == want_py:
            return True
    return False


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


def _run(args: argparse.Namespace) -> int:
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

    report: dict = {"variant": variant.package, "repository_url": args.repository_url,
                    "dry_run": args.dry_run, "uploaded": [], "skipped": []}
    refused = verify_gate(wheels, variant, args.manylinux)
    if refused:
        report["refused"] = refused
        report["error"] = "nothing uploaded; failed verify: " + "; ".join(
            f"{r['file']}: {r['reason']}" for r in refused)
        print(json.dumps(report, indent=2) if args.json else report["error"])
        return EXIT_FAIL
    existing = {f.filename: f.url for f in list_index_files(args.simple_url, variant.package)}
    todo = []
    for w in wheels:
        if w.name in existing:
            report["skipped"].append({"file": w.name, "url": existing[w.name], "reason": "already in the index"})
            print(f"{w.name}: already in the index, not uploaded again", file=sys.stderr)
        elif args.dry_run:
            report["skipped"].append({"file": w.name, "url": "", "reason": "dry run"})
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
            report["error"] = f"twine upload exited {proc.returncode}"
            print(json.dumps(report, indent=2) if args.json else report["error"])
            return EXIT_FAIL
        listed = {f.filename: f.url for f in list_index_files(args.simple_url, variant.package)}
        for w in todo:
            if w.name not in listed:
                report["error"] = f"{w.name}: uploaded but not listed at {args.simple_url}"
                print(json.dumps(report, indent=2) if args.json else report["error"])
                return EXIT_FAIL
            report["uploaded"].append({"file": w.name, "url": listed[w.name]})
            print(f"{w.name}: uploaded, {listed[w.name]}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for u in report["uploaded"]:
            print(f"uploaded {u['file']}: {u['url']}")
        for s in report["skipped"]:
            print(f"skipped {s['file']}: {s['reason']}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="upload wheels with twine unless the index already has them")
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--repository-url", required=True, help="twine upload URL (legacy upload API)")
    p.add_argument("--simple-url", required=True, help="the index's simple API root, to skip existing files")
    p.add_argument("--dry-run", action="store_true", help="check and report, upload nothing")
    p.add_argument("--manylinux", help="policy the wheels are verified against "
                                       "(default: variants.json manylinux_policy)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("wheels", nargs="+", help="wheel files")
    p.set_defaults(func=_run)
