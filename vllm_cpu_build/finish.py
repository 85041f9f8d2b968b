"""What happens to the wheel pip built before it is the release's wheel.

* **strip**: upstream builds ``RelWithDebInfo``; vLLM's own modules
  (``vllm/_C*.so``) carry ~95 % debug info (0.11.2 ``_C.abi3.so``: 31 MB,
  0.9 MB without).  ``objcopy --only-keep-debug`` keeps it apart (optional
  debug archive beside the wheel), ``strip --strip-debug`` removes it and
  ``--add-gnu-debuglink`` lets gdb find it again.  The code bytes do not
  change, so the ISA audit sees the same instructions.
* **record**: the provenance record goes into the dist-info (RECORD updated).
* **platform tag**: what the binaries need, from ``auditwheel show`` (its
  ``sym_tag``: the oldest manylinux whose glibc/libstdc++ symbol versions
  cover every ELF), never the policy stamped on blindly.  A wheel that meets
  the policy keeps the policy's tag (a true claim, and the one name the
  index and "already published" checks expect); one that needs a newer
  glibc is named for it, and ``verify`` then fails it against the policy.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from wheel.wheelfile import WheelFile  # type: ignore[import-untyped]  # wheel ships no type information

from vllm_cpu_build import provenance
from vllm_cpu_build.provenance import ModuleSize, Platform, Record, Strip

_MODULE = re.compile(r"^vllm/[^/]+\.so(\.\d+)*$")


class FinishError(Exception):
    """A tool the finishing needs failed (exit 1)."""


def vllm_modules(names: list[str]) -> list[str]:
    return [n for n in names if _MODULE.match(n)]


def _strip_one(data: bytes, name: str, tmp: Path) -> tuple[bytes, bytes]:
    """(stripped module, its debug info) for one ELF."""
    for tool in ("objcopy", "strip"):
        if not shutil.which(tool):
            raise FinishError(f"{tool} not found (binutils) to strip {name}")
    src = tmp / Path(name).name
    dbg = tmp / (Path(name).name + ".debug")
    src.write_bytes(data)
    for cmd in (["objcopy", "--only-keep-debug", str(src), str(dbg)],
                ["strip", "--strip-debug", str(src)],
                ["objcopy", f"--add-gnu-debuglink={dbg}", str(src)]):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tmp)
        if r.returncode != 0:
            raise FinishError(f"{' '.join(cmd[:2])} {name}: {r.stderr.strip()}")
    return src.read_bytes(), dbg.read_bytes()


def rewrite(wheel: Path, *, strip: bool, record: Record, debug_archive: Path | None = None,
            epoch: int | None = None) -> Strip:
    """Strip vLLM's modules and embed ``record`` (its ``strip`` section filled in here).

    Rewrites ``wheel`` in place with a fresh RECORD; returns the strip section.
    The debug archive's times are ``epoch`` (0 without one), so it too is the
    same bytes on a rebuild; the wheel's own times are ``build``'s last step.
    """
    sizes: dict[str, ModuleSize] = {}
    archive: str | None = None
    debug: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as zin, tempfile.TemporaryDirectory(prefix="strip-", dir=wheel.parent) as tmpd:
        out = Path(tmpd) / wheel.name  # WheelFile insists on a wheel's file name
        names = zin.namelist()
        dist_info = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
        if len(dist_info) != 1:
            raise FinishError(f"{wheel.name}: expected one .dist-info directory, found {dist_info}")
        modules = set(vllm_modules(names))
        with WheelFile(out, "w") as zout:
            for info in zin.infolist():
                if info.filename == f"{dist_info[0]}/RECORD" or info.is_dir():
                    continue  # WheelFile writes RECORD itself
                data = zin.read(info)
                if strip and info.filename in modules:
                    stripped, dbg = _strip_one(data, info.filename, Path(tmpd))
                    sizes[info.filename] = ModuleSize(len(data), len(stripped))
                    debug[info.filename + ".debug"] = dbg
                    data = stripped
                zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                zi.external_attr = info.external_attr
                zi.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(zi, data)
            if debug_archive is not None and debug:
                # gzip's header holds a time and the file name too: both fixed.
                with open(debug_archive, "wb") as raw, \
                        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch or 0) as gz, \
                        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name, data in sorted(debug.items()):
                        ti = tarfile.TarInfo(name)
                        ti.size, ti.mode, ti.mtime = len(data), 0o644, epoch or 0
                        tar.addfile(ti, io.BytesIO(data))
                archive = debug_archive.name
            section = Strip(strip, sizes, archive)
            zi = zipfile.ZipInfo(f"{dist_info[0]}/{provenance.MEMBER}", date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, provenance.dumps(dataclasses.replace(record, strip=section)))
        out.replace(wheel)
    return section


def _glibc(tag: str) -> tuple[int, int] | None:
    m = re.match(r"^manylinux_(\d+)_(\d+)_", tag)
    if m:
        return int(m.group(1)), int(m.group(2))
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    return next((v for k, v in legacy.items() if tag.startswith(k + "_")), None)


def needed_tag(wheel: Path, policy: str, arch: str) -> tuple[str, dict[str, Any]]:
    """(the manylinux tag the binaries need, auditwheel's report) via ``auditwheel show --json``."""
    exe = shutil.which("auditwheel", path=str(Path(sys.executable).parent)) or shutil.which("auditwheel")
    cmd = [exe] if exe else [sys.executable, "-m", "auditwheel"]
    with tempfile.TemporaryDirectory(prefix="auditwheel-") as tmp:
        # auditwheel takes the libc family from the file name (pip names it linux_<arch>, and a module
        # that links no libc gives it nothing to detect): name a link for glibc; the symbols decide the tag.
        parts = wheel.name[:-4].split("-")
        link = Path(tmp) / ("-".join(parts[:-1] + [f"{policy}_{arch}"]) + ".whl")
        link.symlink_to(wheel.resolve())
        # ISA levels are the ISA contract's business (verify), not the platform tag's.
        r = subprocess.run([*cmd, "show", "--json", "--disable-isa-ext-check", str(link)],
                           capture_output=True, text=True, check=False)
    try:
        report = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise FinishError(f"auditwheel show gave no report (exit {r.returncode}): {r.stderr.strip()[-500:]}") from None
    if not isinstance(report, dict):
        raise FinishError(f"auditwheel show: not a report: {r.stdout.strip()[-500:]}")
    tag = report.get("sym_tag")
    if not isinstance(tag, str) or _glibc(tag) is None:
        raise FinishError(f"auditwheel show: no manylinux symbol tag for {wheel.name}: "
                          f"{report.get('error') or report}")
    return tag, report


def platform_tag(needed: str, policy: str, arch: str) -> str:
    """The tag to give: the policy's when the binaries meet it, else what they need."""
    want = f"{policy}_{arch}"
    have, pol = _glibc(needed), _glibc(want)
    if have is None or pol is None:
        raise FinishError(f"not manylinux tags: {needed}, {want}")
    return want if have <= pol else needed


def platform(wheel: Path, policy: str, arch: str) -> Platform:
    """The platform tag the wheel gets: what auditwheel says its binaries need, against the policy."""
    needed, _report = needed_tag(wheel, policy, arch)
    return Platform(policy, needed, platform_tag(needed, policy, arch))
