"""Reproducible wheels: the same tag built twice, anywhere, gives the same bytes.

What would make two builds of one tree differ, and what ``build`` does about it:

* **time** in the binaries (``__DATE__``, ``__TIME__``, timestamps tools
  write): ``SOURCE_DATE_EPOCH`` is exported to the build, the commit time of
  the checked-out tag (``git log -1 --format=%ct``: the same on every worker
  and every rebuild) unless ``--source-date-epoch`` says otherwise; a tree
  that is no git checkout (an sdist) takes the option or the worker's own
  ``SOURCE_DATE_EPOCH``;
* **paths**: the source tree (and the CMake build directory under it), the
  build env (torch's headers: ``TORCH_CHECK`` embeds ``__FILE__``), the
  build interpreter's installation (``Python.h``) and each FetchContent
  source are mapped to fixed names with ``-ffile-prefix-map`` (C, C++:
  ``__FILE__`` and debug info alike; the debug info counts although it is
  stripped: ``.gnu_debuglink`` holds the CRC of the debug file), so the
  directory a worker builds in leaves no trace.  ccache runs without
  ``CCACHE_BASEDIR``, which would hand the compiler relative paths and make a
  cached build differ from the uncached rebuild that checks it;
* **the archive**: ``normalize_wheel`` writes the final wheel once more:
  entries sorted (``.dist-info`` last, ``RECORD`` at the very end), every
  time the epoch (1980-01-01 without one: zip has nothing earlier), modes
  0644 or 0755, one compression, and RECORD in that order.  It runs after
  strip and the tag rewrite, so neither leaves its own times behind.

``vllm-cpu-build compare`` says where two wheels still differ.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z: the earliest time a zip entry can hold
SRC_MAP = "/usr/src/vllm"  # what the source tree (and the build dir under it) is called in the binaries
ENV_MAP = "/usr/src/vllm-build-env"
PYTHON_MAP = "/usr/src/python"  # the build interpreter's installation (Python.h)
_SYSTEM_PREFIXES = {"/", "/usr", "/usr/local"}  # the same on every worker of an image: left as they are
FETCH_MAP = "/usr/src/fetchcontent"  # + /<name>


class EpochError(ValueError):
    """A SOURCE_DATE_EPOCH that is not a whole number of seconds (exit 2)."""


@dataclass(frozen=True)
class Epoch:
    value: int | None
    origin: str  # "--source-date-epoch", "SOURCE_DATE_EPOCH", "git commit time", "none"


def parse_epoch(text: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise EpochError(f"{where} {text!r}: not a whole number of seconds since 1970") from None
    if value < 0:
        raise EpochError(f"{where} {value}: before 1970")
    return value


def source_date_epoch(src: Path, explicit: int | None = None, environ: Mapping[str, str] | None = None) -> Epoch:
    """The build's SOURCE_DATE_EPOCH: the option, else the tree's commit time, else the worker's variable.

    The tag's commit time beats a variable the worker happens to carry: every
    worker rebuilding the tag must arrive at the same time.
    """
    if explicit is not None:
        return Epoch(explicit, "--source-date-epoch")
    if (src / ".git").exists():
        r = subprocess.run(["git", "-C", str(src), "log", "-1", "--format=%ct"], capture_output=True, text=True,
                           check=False)
        if r.returncode == 0 and r.stdout.strip():
            return Epoch(parse_epoch(r.stdout, "git commit time"), "git commit time")
    env = os.environ if environ is None else environ
    if env.get("SOURCE_DATE_EPOCH", "").strip():
        return Epoch(parse_epoch(env["SOURCE_DATE_EPOCH"], "SOURCE_DATE_EPOCH"), "SOURCE_DATE_EPOCH")
    return Epoch(None, "none")


def path_maps(src: Path, build_env: Path | None, fetch: Mapping[str, Path],
              python_prefix: str | None = None) -> dict[str, str]:
    """{directory on this worker: its fixed name in the binaries}, longest first (the most specific wins).

    ``python_prefix``: the build interpreter's ``sys.base_prefix`` (pyenv, uv
    and the like install it per user); a system prefix is left alone.
    """
    maps = {str(src): SRC_MAP}
    if build_env is not None:
        maps[str(build_env)] = ENV_MAP
    if python_prefix and python_prefix.rstrip("/") not in _SYSTEM_PREFIXES | {""}:
        maps[python_prefix.rstrip("/")] = PYTHON_MAP
    for name, path in fetch.items():
        maps[str(path)] = f"{FETCH_MAP}/{name}"
    return dict(sorted(maps.items(), key=lambda kv: -len(kv[0])))


def build_environment(epoch: int | None, maps: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set on the build: SOURCE_DATE_EPOCH and the path maps added to the worker's flags."""
    out: dict[str, str] = {}
    if epoch is not None:
        out["SOURCE_DATE_EPOCH"] = str(epoch)
    # GCC and Clang take the *last* matching option: the most specific map goes last.
    c_maps = " ".join(f"-ffile-prefix-map={k}={v}" for k, v in reversed(list(maps.items())))
    for var in ("CFLAGS", "CXXFLAGS"):
        out[var] = f"{environ.get(var, '')} {c_maps}".strip()
    # Rust (the 0.27+ frontend) is not mapped: RUSTFLAGS would replace the tree's own cargo flags.
    return out


def zip_time(epoch: int | None) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(epoch or ZIP_EPOCH, ZIP_EPOCH))
    return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec


def _order(name: str) -> tuple[int, str]:
    top = name.split("/", 1)[0]
    if not top.endswith(".dist-info"):
        return 0, name
    return (2 if name == f"{top}/RECORD" else 1), name


def _record(names: list[str], data: Mapping[str, bytes], record: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for name in names:
        if name == record:
            writer.writerow([name, "", ""])
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data[name]).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data[name])])
    return buf.getvalue().encode()


def normalize_wheel(wheel: Path, epoch: int | None) -> None:
    """Rewrite ``wheel`` in place so that its bytes depend on its members' content and ``epoch`` only."""
    with zipfile.ZipFile(wheel) as zin:
        infos = [i for i in zin.infolist() if not i.is_dir()]
        data = {i.filename: zin.read(i) for i in infos}
        executable = {i.filename for i in infos if (i.external_attr >> 16) & 0o111}
    names = sorted(data, key=_order)
    records = [n for n in names if _order(n)[0] == 2]
    if len(records) == 1:  # written afresh in the new order (the hashes are the same)
        data[records[0]] = _record(names, data, records[0])
    when = zip_time(epoch)
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zout:
        for name in names:
            zi = zipfile.ZipInfo(name, date_time=when)
            zi.create_system = 3  # unix: the mode below is read
            zi.external_attr = (0o100755 if name in executable else 0o100644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, data[name], compresslevel=6)
    tmp.replace(wheel)
