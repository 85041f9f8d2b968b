"""The wheel's Python tags: one ``cp38-abi3`` wheel when every module uses only the stable ABI.

``abi3_status`` asks abi3audit whether each compiled module of the wheel
pip built uses only the Python 3.8 stable ABI; ``retag`` gives the wheel
its final tags with ``wheel tags`` (``cp38-abi3`` or the build's own
``cp3X-cp3X``, and the manylinux platform tag ``finish`` chose).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from vllm_cpu_build.errors import BuildFailed

PYTHON_TAG, ABI_TAG = "cp38", "abi3"
MINIMUM = "3.8"


def extension_modules(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return [n for n in zf.namelist() if re.search(r"\.so(\.\d+)*$", n)]


def _audit(wheel: Path) -> tuple[list[dict[str, object]] | None, str]:
    """abi3audit's per-module results for ``wheel`` (None: it gave no report, and why)."""
    exe = shutil.which("abi3audit", path=str(Path(sys.executable).parent)) or shutil.which("abi3audit")
    cmd = [exe] if exe else [sys.executable, "-m", "abi3audit"]
    out = subprocess.run([*cmd, str(wheel), "--report", "--assume-minimum-abi3", MINIMUM],
                         capture_output=True, text=True, check=False)
    try:
        report = json.loads(out.stdout)
        return [r for spec in report["specs"].values() for r in spec.get("wheel", [])], ""
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        return None, f"abi3audit gave no report (exit {out.returncode}): {out.stderr.strip()[-500:]}"


def abi3_status(wheel: Path) -> tuple[bool, str]:
    """(every compiled module is a clean stable-ABI module, explanation) via abi3audit."""
    mods = extension_modules(wheel)
    if not mods:
        return False, "no compiled modules (pure wheel)"
    not_named = [m for m in mods if not m.endswith(".abi3.so")]
    if not_named:
        return False, f"not stable-ABI modules: {', '.join(not_named)}"
    results, why = _audit(wheel)
    if results is None:
        return False, why
    bad = []
    for r in results:
        res = r.get("result")
        res = res if isinstance(res, dict) else {}
        if not res.get("is_abi3") or res.get("non_abi3_symbols") or not res.get("is_abi3_baseline_compatible"):
            bad.append(f"{r.get('name')}: non-abi3 symbols {res.get('non_abi3_symbols')}, "
                       f"newer than {MINIMUM}: {res.get('future_abi3_objects')}")
    if len(results) != len(mods):
        bad.append(f"abi3audit checked {len(results)} of {len(mods)} modules")
    if bad:
        return False, "; ".join(bad)
    return True, f"{len(mods)} module(s) use only the Python {MINIMUM} stable ABI (abi3audit)"


def retag(wheel: Path, abi3: bool, platform_tag: str) -> Path:
    """Give ``wheel`` its final tags with ``wheel tags``; returns the new path."""
    cmd = [sys.executable, "-m", "wheel", "tags", "--remove", f"--platform-tag={platform_tag}"]
    if abi3:
        cmd += [f"--python-tag={PYTHON_TAG}", f"--abi-tag={ABI_TAG}"]
    out = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True, check=False, cwd=wheel.parent)
    if out.returncode != 0:
        raise BuildFailed(f"wheel tags failed: {out.stderr.strip()}")
    return wheel.parent / out.stdout.strip().splitlines()[-1]
