"""The integrity checks of ``verify``: is the wheel a well-formed wheel of the package it names?

zip-crc, record, metadata, tags and twine, as ``vllm_cpu_build/verify.py``'s
docstring lists them (the one place that says what each check does).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
from email.parser import HeaderParser

from packaging.metadata import Metadata, parse_email
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, parse_tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from vllm_cpu_build import abi3
from vllm_cpu_build.wheelcheck import CheckFailed, Context, b64


def check_zip(ctx: Context) -> str:
    w = ctx.wheel
    problems = [f"{m.name}: {m.error}" for m in w.members.values() if m.error]
    problems += [f"{n}: duplicate member name" for n in w.duplicates]
    if problems:
        raise CheckFailed(problems)
    return f"{len(w.members)} members read, CRC-32 ok"


def check_record(ctx: Context) -> str:
    w = ctx.wheel
    record_name = f"{ctx.dist_info}/RECORD"
    text = ctx.file_text(record_name)
    problems: list[str] = []
    listed: set[str] = set()
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row:
            continue
        if len(row) != 3:
            problems.append(f"RECORD line {lineno}: {len(row)} fields, expected 3")
            continue
        path, digest, size = row
        if path in listed:
            problems.append(f"{path}: listed twice")
        listed.add(path)
        if path == record_name:
            continue
        member = w.members.get(path)
        if member is None:
            problems.append(f"{path}: listed in RECORD but not in the wheel")
            continue
        algo, _, value = digest.partition("=")
        if algo not in ("sha256", "sha384", "sha512") or not value:
            problems.append(f"{path}: hash {digest or '(empty)'!r} is not sha256 or stronger")
            continue
        actual = member.sha256 if algo == "sha256" else b64(hashlib.new(algo, w.read(path)).digest())
        if actual != value:
            problems.append(f"{path}: {algo} mismatch (RECORD {value}, actual {actual})")
        if size != str(member.size):
            problems.append(f"{path}: size mismatch (RECORD {size or '(empty)'}, actual {member.size})")
    # Signatures of RECORD cannot list themselves (wheel spec).
    unsigned = {record_name, f"{record_name}.jws", f"{record_name}.p7s"}
    problems += [f"{n}: in the wheel but not in RECORD" for n in w.members if n not in listed and n not in unsigned]
    if problems:
        raise CheckFailed(problems)
    return f"{len(listed) - 1} files listed, hashes and sizes match"


def check_metadata(ctx: Context) -> str:
    problems: list[str] = []
    text = ctx.file_text(f"{ctx.dist_info}/METADATA")
    raw, unparsed = parse_email(text)
    ctx.metadata = dict(raw)
    name = raw.get("name")
    want = ctx.variant.package
    if not name:
        problems.append("Name missing")
    elif canonicalize_name(name) != canonicalize_name(want):
        problems.append(f"Name {name!r} is not the variant's package {want!r}")
    version = None
    vtext = raw.get("version")
    if not vtext:
        problems.append("Version missing")
    else:
        try:
            version = Version(vtext)
        except InvalidVersion:
            problems.append(f"Version {vtext!r} is not valid PEP 440")
        else:
            if version.local is not None:
                problems.append(f"Version {vtext!r} has a local part '+{version.local}'; PyPI refuses local versions")
    rp = raw.get("requires_python")
    if not rp:
        problems.append("Requires-Python missing")
    else:
        try:
            SpecifierSet(rp)
        except InvalidSpecifier:
            problems.append(f"Requires-Python {rp!r} is not a valid specifier")
    if ctx.filename_error:
        problems.append(ctx.filename_error)
    if ctx.filename is not None:
        fname, fver, _, _ = ctx.filename
        if name and canonicalize_name(name) != fname:
            problems.append(f"filename name {fname!r} differs from METADATA Name {name!r}")
        if version is not None and fver != version:
            problems.append(f"filename version {fver} differs from METADATA Version {vtext}")
    # Anything else packaging's validator (PyPI's rules) rejects.
    try:
        Metadata.from_email(text, validate=True)
    except Exception as exc:  # packaging raises an ExceptionGroup of InvalidMetadata
        subs = getattr(exc, "exceptions", [exc])
        seen = " ".join(problems)
        problems += [f"invalid metadata: {e}" for e in subs if str(e) not in seen]
    if problems:
        raise CheckFailed(problems)
    return f"Name {name}, Version {vtext}, Requires-Python {rp}"


def platform_arch(platform: str) -> str:
    m = re.match(r"^(?:manylinux_\d+_\d+|manylinux\d+|musllinux_\d+_\d+|linux)_(.+)$", platform)
    return m.group(1) if m else platform


def check_tags(ctx: Context) -> str:
    problems: list[str] = []
    if ctx.filename is None:
        raise CheckFailed(ctx.filename_error)
    file_tags: frozenset[Tag] = ctx.filename[3]
    wheel_text = ctx.file_text(f"{ctx.dist_info}/WHEEL")
    wheel_meta = HeaderParser().parsestr(wheel_text)
    wheel_tags: set[Tag] = set()
    for line in wheel_meta.get_all("Tag") or []:
        wheel_tags |= set(parse_tag(line.strip()))
    if not wheel_tags:
        problems.append("WHEEL has no Tag lines")
    elif wheel_tags != set(file_tags):
        only_f = sorted(map(str, set(file_tags) - wheel_tags))
        only_w = sorted(map(str, wheel_tags - set(file_tags)))
        problems.append(
            "filename tags differ from WHEEL Tag lines"
            + (f"; only in filename: {', '.join(only_f)}" if only_f else "")
            + (f"; only in WHEEL: {', '.join(only_w)}" if only_w else "")
        )
    if not str(wheel_meta.get("Wheel-Version", "")).startswith("1."):
        problems.append(f"Wheel-Version {wheel_meta.get('Wheel-Version')!r}, expected 1.x")
    platforms = sorted({t.platform for t in file_tags | wheel_tags})
    for plat in platforms:
        if platform_arch(plat) != ctx.arch:
            problems.append(f"platform tag {plat!r} is not for {ctx.arch}")
    elves = ctx.wheel.elf_members
    for name in elves:
        machine = ctx.wheel.members[name].machine
        if machine != ctx.arch:
            problems.append(f"{name}: ELF machine {machine}, not {ctx.arch}")
    if elves and str(wheel_meta.get("Root-Is-Purelib", "")).strip().lower() == "true":
        problems.append("Root-Is-Purelib: true in a wheel with compiled modules")
    # The Python/ABI tags against the modules: a cpXY-abi3 wheel only when abi3audit proves every module.
    modules = {n: ctx.wheel.elf(n) for n in elves if abi3.is_extension_module(n)}
    abi_problems, abi_note = abi3.tag_problems(file_tags, modules)
    problems += abi_problems
    if problems:
        raise CheckFailed(problems)
    return (f"tags {', '.join(sorted(map(str, file_tags)))}; {len(elves)} ELF member(s), all {ctx.arch}"
            + (f"; {abi_note}" if abi_note else ""))


def check_twine(ctx: Context) -> str:
    cmd = [sys.executable, "-m", "twine", "--no-color", "check", "--strict", str(ctx.wheel.path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise CheckFailed("twine check timed out") from None
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    text = " | ".join(lines)
    if proc.returncode != 0:
        raise CheckFailed(f"twine check --strict exited {proc.returncode}: {text}")
    return "twine check --strict: PASSED"
