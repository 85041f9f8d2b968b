"""``vllm-cpu-build upload``: publish checked wheels with twine, never twice.

Every wheel is verified again right before the upload (all ``verify``
checks, arch from its platform tag): the Buildbot factory already stops
after a failed verify, but a wheel that is not what its name says must
never be published, whatever ran before; one failing wheel uploads none.

Before uploading, the package's page on the index's simple API (PEP 691
JSON, HTML fallback, so PyPI and pypiserver both work) is read.  The index
is checked, not trusted: a name it already lists is skipped only when its
sha256 is the sha256 of the wheel verified here (the same file); a
different file under the name (planted, or swapped in after the build)
fails the upload loudly with both hashes and uploads nothing.  With
``--built-sha256`` (the publisher passes the sha256 each wheel's build
recorded) a wheel whose bytes are not the ones the build made is refused,
with both hashes, before anything else runs.  Each
wheel's sha256 is taken before ``verify`` and checked again right before
twine sends it, and after the upload the index must list that sha256.  Credentials come from the environment
(``TWINE_USERNAME``/``TWINE_PASSWORD``, set by the master-side publishing
step from a secret; a build worker never has them) and are never put on a
command line.  ``--dry-run`` uploads nothing.

A package index that is down or overloaded is a transient failure: each
wheel goes to twine on its own, and after a failed attempt the index is
read again (a wheel listed now made it and is never sent twice) before
the next attempt, ``--backoff`` seconds later, doubling each time.  After
``--attempts`` the command fails with one line naming the index and what
was and was not uploaded; the build then failed, and the re-check or a
"rebuild" of the release uploads the rest.

The index client is ``vllm_cpu_build.index`` (shared with the master).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from vllm_cpu_build.errors import StepFailed, UsageError
from vllm_cpu_build.files import sha256_of
from vllm_cpu_build.index import IndexFile, IndexUnusable, list_index_files, session, wheel_covers
from vllm_cpu_build.results import NotUploaded, UploadedFile, UploadResult
from vllm_cpu_build.variants import Variant

__all__ = ["IndexFile", "built_digests", "conflict", "list_index_files", "not_as_built", "verify_gate",
           "wheel_covers"]

ATTEMPTS = 4  # twine runs per wheel (and index reads) before giving up
BACKOFF = 10.0  # seconds before the second attempt; doubles after each


def _why(exc: BaseException) -> str:
    """The useful end of a requests error ("[Errno 111] Connection refused"), not its repr chain."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0).strip()
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"HTTP {status}" if status else (type(exc).__name__ + (f": {text[:120]}" if text else ""))


class _Index:
    """The index's listing of one package, read with retries and backoff."""

    def __init__(self, simple_url: str, package: str, attempts: int, backoff: float) -> None:
        self.simple_url, self.package = simple_url, package
        self.attempts, self.backoff = attempts, backoff

    def pause(self, attempt: int) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        print(f"  retrying in {delay:g} s", file=sys.stderr, flush=True)
        time.sleep(delay)

    def listed(self) -> dict[str, IndexFile]:
        """{filename: its listing}; raises IndexUnusable (one line) when it cannot be read after every attempt."""
        for attempt in range(1, self.attempts + 1):
            try:
                # A quick blip is retried by the session; an outage by this loop, with its longer backoff.
                with session(retries=2) as http:
                    return {f.filename: f for f in list_index_files(self.simple_url, self.package, http=http)}
            except (requests.RequestException, IndexUnusable, OSError) as exc:
                why = _why(exc)
                print(f"reading {self.simple_url} (attempt {attempt} of {self.attempts}): {why}", file=sys.stderr)
                if attempt == self.attempts:
                    raise IndexUnusable(f"package index {self.simple_url} not readable after {self.attempts} "
                                        f"attempts: {why}") from None
                self.pause(attempt)
        raise AssertionError("unreachable")


def conflict(listed: IndexFile, sha256: str) -> str | None:
    """Why the file the index lists under a wheel's name is not that wheel (None: the same sha256)."""
    if listed.sha256 and listed.sha256 == sha256:
        return None
    held = f"index sha256 {listed.sha256}" if listed.sha256 else "the index gives no sha256 for it"
    return (f"{listed.filename}: the index holds a different file under this name: {held}, "
            f"this build's verified wheel sha256 {sha256}")


def built_digests(pairs: list[str], wheels: list[Path]) -> dict[str, str]:
    """{wheel name: the sha256 its build recorded} from ``--built-sha256 NAME=SHA256`` (UsageError naming it).

    None given: {} (nothing to compare).  Given: every wheel needs exactly one, and every one names a wheel.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, digest = pair.partition("=")
        digest = digest.strip().lower()
        if not sep or not name or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UsageError(f"--built-sha256 {pair!r}: expected WHEEL_NAME=<64 hex digits>")
        if name in out:
            raise UsageError(f"--built-sha256: {name} given twice")
        out[name] = digest
    if not out:
        return out
    names = {w.name for w in wheels}
    unknown = sorted(set(out) - names)
    if unknown:
        raise UsageError(f"--built-sha256: {', '.join(unknown)} is not among the wheels given")
    missing = sorted(names - set(out))
    if missing:
        raise UsageError(f"--built-sha256: no recorded sha256 for {', '.join(missing)}")
    return out


def not_as_built(digests: dict[str, str], built: dict[str, str]) -> list[str]:
    """One line per wheel whose bytes are not the ones its build recorded (both hashes named)."""
    return [f"{name}: not the wheel the build made: received sha256 {digests[name]}, "
            f"the build recorded sha256 {want}"
            for name, want in sorted(built.items()) if digests.get(name) != want]


def verify_gate(wheels: list[Path], variant: Variant, manylinux: str | None = None) -> list[dict[str, str]]:
    """[{"file", "reason"}] for every wheel that fails ``verify`` as ``variant`` (arch from its tag)."""
    from vllm_cpu_build.integrity import platform_arch
    from vllm_cpu_build.verify import verify_wheel

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


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be a whole number of at least 1")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        s = -1.0
    if not 0 <= s <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r}: must be a number of seconds from 0 to 3600")
    return s


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

    built = built_digests(args.built_sha256 or [], wheels)
    report = UploadResult(variant.package, args.repository_url, args.dry_run)
    digests = {w.name: sha256_of(w) for w in wheels}  # taken before verify: the bytes verify checks
    swapped = not_as_built(digests, built)
    if swapped:
        for line in swapped:
            print(f"REFUSED {line}", file=sys.stderr)
        raise StepFailed("nothing uploaded; " + "; ".join(swapped), refused=swapped)
    refused = verify_gate(wheels, variant, args.manylinux)
    if refused:
        raise StepFailed("nothing uploaded; failed verify: " + "; ".join(f"{r['file']}: {r['reason']}"
                                                                         for r in refused), refused=refused)
    idx = _Index(args.simple_url, variant.package, args.attempts, args.backoff)
    try:
        existing = idx.listed()
    except IndexUnusable as exc:
        raise StepFailed(f"nothing uploaded: {exc}") from None
    clashes = [c for w in wheels if w.name in existing and (c := conflict(existing[w.name], digests[w.name]))]
    if clashes:
        for c in clashes:
            print(f"CONFLICT {c}", file=sys.stderr)
        raise StepFailed("nothing uploaded; " + "; ".join(clashes), conflicts=clashes)
    todo = []
    for w in wheels:
        if w.name in existing:
            report.skipped.append(NotUploaded(w.name, "already in the index, same sha256",
                                              existing[w.name].url, digests[w.name]))
            print(f"{w.name}: already in the index with the same sha256 {digests[w.name]}, not uploaded again",
                  file=sys.stderr)
        elif args.dry_run:
            report.skipped.append(NotUploaded(w.name, "dry run"))
            print(f"{w.name}: dry run, would upload to {args.repository_url}", file=sys.stderr)
        else:
            todo.append(w)
    if todo:
        if not os.environ.get("TWINE_PASSWORD"):
            raise UsageError("no credentials: TWINE_PASSWORD is not set (the index token secret)")
        for w in todo:
            try:
                url = _upload_one(w, digests[w.name], args.repository_url, idx)
            except (IndexUnusable, StepFailed) as exc:
                done = ", ".join(u.file for u in report.uploaded) or "nothing"
                left = ", ".join(x.name for x in todo[len(report.uploaded):])
                raise StepFailed(f"{exc}; uploaded: {done}; not uploaded: {left}",
                                 uploaded=[u.file for u in report.uploaded]) from None
            report.uploaded.append(UploadedFile(w.name, url, digests[w.name]))
            print(f"{w.name}: uploaded, {url}", file=sys.stderr)
    out = sys.stderr if args.json else sys.stdout
    for u in report.uploaded:
        print(f"uploaded {u.file}: {u.url}", file=out)
    for s in report.skipped:
        print(f"skipped {s.file}: {s.reason}", file=out)
    return report


def _twine(cmd: list[str]) -> int:
    """Run twine; its output goes to stderr, a Python traceback (e.g. a refused connection) as one line."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=os.environ.copy(), check=False)
    out = proc.stdout or ""
    head, sep, trace = out.partition("Traceback (most recent call last):")
    sys.stderr.write(head)
    if sep:
        last = [line for line in trace.strip().splitlines() if line.strip()][-1:]
        print(f"twine stopped: {_why(Exception(last[0])) if last else 'a Python error'}", file=sys.stderr)
    sys.stderr.flush()
    return proc.returncode


def _listed_as(wheel: Path, sha256: str, listed: dict[str, IndexFile]) -> str | None:
    """The index URL of ``wheel`` when the index lists it with ``sha256``; StepFailed for another file."""
    if wheel.name not in listed:
        return None
    why = conflict(listed[wheel.name], sha256)
    if why:
        raise StepFailed(why)
    return listed[wheel.name].url


def _upload_one(wheel: Path, sha256: str, repository_url: str, idx: _Index) -> str:
    """Upload one wheel with twine, retrying a failure; its index URL.  Never sends a listed file again.

    The wheel must still have the sha256 it had when it was verified, and
    the index must list that sha256 under its name afterwards.
    """
    cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", repository_url, str(wheel)]
    for attempt in range(1, idx.attempts + 1):
        if attempt > 1:
            url = _listed_as(wheel, sha256, idx.listed())  # it may have arrived after all
            if url is not None:
                print(f"{wheel.name}: listed by the index now; not sent again", file=sys.stderr)
                return url
        if sha256_of(wheel) != sha256:
            raise StepFailed(f"{wheel.name}: changed on disk after verify (sha256 {sha256_of(wheel)}, "
                             f"verified {sha256}); not uploaded")
        print(f"running (attempt {attempt} of {idx.attempts}): " + " ".join(cmd), file=sys.stderr, flush=True)
        rc = _twine(cmd)
        url = _listed_as(wheel, sha256, idx.listed())
        if url is not None:
            return url
        if rc == 0:
            raise StepFailed(f"{wheel.name}: twine succeeded but {idx.simple_url} does not list it")
        if attempt == idx.attempts:
            raise StepFailed(f"{wheel.name}: twine upload to {repository_url} failed {idx.attempts} times "
                             f"(last exit {rc})")
        idx.pause(attempt)
    raise AssertionError("unreachable")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "upload", help="upload wheels with twine unless the index already has them",
        description="Verify every wheel again, then upload with twine what the index does not list yet. "
                    "Credentials come from the environment only: TWINE_USERNAME and TWINE_PASSWORD (the master's "
                    "publishing step sets them from the index token secret); they never appear on a command line. "
                    "An index that is down is retried (--attempts, --backoff); a file the index lists is never "
                    "sent again. Exit 1 when a wheel fails verify (none is uploaded), or the index or twine "
                    "still fails after the last attempt (the message says what was uploaded); 2 on bad input.")
    p.add_argument("--variant", required=True, help="package name from variants.json")
    p.add_argument("--repository-url", required=True, help="twine upload URL (legacy upload API)")
    p.add_argument("--simple-url", required=True, help="the index's simple API root, to skip existing files")
    p.add_argument("--dry-run", action="store_true", help="check and report, upload nothing")
    p.add_argument("--built-sha256", action="append", metavar="WHEEL_NAME=SHA256",
                   help="the sha256 the build recorded for a wheel (repeat for each; when given, every wheel "
                        "needs one): a wheel whose bytes differ is refused with both hashes and nothing is uploaded")
    p.add_argument("--manylinux", help="policy the wheels are verified against "
                                       "(default: variants.json manylinux_policy)")
    p.add_argument("--attempts", type=_positive_int, default=ATTEMPTS,
                   help=f"tries per wheel and per index read before giving up (default {ATTEMPTS})")
    p.add_argument("--backoff", type=_seconds, default=BACKOFF,
                   help=f"seconds before the second try, doubled for each further one (default {BACKOFF:g})")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("wheels", nargs="+", help="wheel files")
    p.set_defaults(func=_run)
