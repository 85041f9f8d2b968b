"""The wheel's Python tags: which Pythons share one stable-ABI (``cpXY-abi3``) wheel.

``stable_abi`` reads the floor from the upstream tree: every extension
module a CPU build defines (``define_extension_target`` /
``Python_add_library`` in ``CMakeLists.txt`` before the CPU branch returns,
and in ``cmake/cpu_extension.cmake``) with its ``USE_SABI``; the floor is
the newest stable ABI any of them asks for, at least 3.8 (upstream tags
its wheels ``cp38-abi3``; ``USE_SABI 3`` is older still).  0.27+'s
``fs_io_C``/``spinloop`` ask for 3.11 and exist only when built with
Python >= 3.11: Pythons from the floor on share one ``cp311-abi3`` wheel,
older ones get a wheel each (``plan``, ``wheel_targets``).

``abi3_status`` asks abi3audit whether each compiled module of a wheel uses
only the stable ABI of the floor; ``retag`` gives the wheel its final tags
with ``wheel tags`` (``cpXY-abi3`` or the build's own ``cp3X-cp3X``, and the
manylinux platform tag ``finish`` chose).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag

from vllm_cpu_build.errors import BuildFailed

ABI_TAG = "abi3"
MINIMUM = "3.8"  # the oldest stable ABI a wheel is tagged for (upstream: cp38-abi3)
CMAKELISTS, CPU_CMAKE = "CMakeLists.txt", "cmake/cpu_extension.cmake"
# A CPU build of CMakeLists.txt stops where it includes the CPU recipe (the GPU targets come after).
_CPU_BRANCH = re.compile(r"include\(\$\{CMAKE_CURRENT_LIST_DIR\}/cmake/cpu_extension\.cmake\)")
_TARGET = re.compile(r"\b(?:define_extension_target|define_gpu_extension_target|Python_add_library)\s*\(([^)]*)\)")
_SABI = re.compile(r"\bUSE_SABI\s+(3(?:\.[0-9]+)?)\b")


def _minor(version: str) -> int:
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 else 0


def python_tag(floor: str) -> str:
    """``3.11`` -> ``cp311``."""
    return "cp" + floor.replace(".", "")


@dataclass(frozen=True)
class StableAbi:
    """The tree's stable-ABI modules (name -> ``USE_SABI`` as written) and the floor they need."""

    modules: dict[str, str]

    @property
    def floor(self) -> str:
        """The stable ABI every module fits in: the newest any asks for, at least ``MINIMUM``."""
        return f"3.{max([_minor(MINIMUM), *(_minor(v) for v in self.modules.values())])}"

    @property
    def tag(self) -> str:
        """The Python and ABI tags of the stable-ABI wheel: ``cp311-abi3``."""
        return f"{python_tag(self.floor)}-{ABI_TAG}"

    def serves(self, python: str) -> bool:
        """Whether a wheel built with ``python`` (``3.X``) is the stable-ABI wheel (has every module)."""
        return _minor(python) >= _minor(self.floor)


def stable_abi(src: Path) -> StableAbi:
    """The stable-ABI extension modules a CPU build of the tree ``src`` defines."""
    texts = []
    top = src / CMAKELISTS
    if top.is_file():
        text = top.read_text(errors="replace")
        cut = _CPU_BRANCH.search(text)
        texts.append(text[:cut.start()] if cut else text)
    cpu = src / CPU_CMAKE
    if cpu.is_file():
        texts.append(cpu.read_text(errors="replace"))
    modules: dict[str, str] = {}
    for text in texts:
        text = re.sub(r"#[^\n]*", "", text)  # comments may hold parentheses
        for m in _TARGET.finditer(text):
            sabi = _SABI.search(m.group(1))
            name = m.group(1).split()[0] if m.group(1).split() else ""
            if sabi and name:
                modules[name] = sabi.group(1)
    return StableAbi(modules)


@dataclass(frozen=True)
class WheelTarget:
    """One wheel of a build: the Python that builds it, the Pythons it serves, stable-ABI or not."""

    python: str
    serves: tuple[str, ...]
    abi3: bool


def wheel_targets(pythons: list[str], floor: str | None) -> list[WheelTarget]:
    """The wheels serving ``pythons``: one per Python below ``floor``, one stable-ABI wheel for the rest
    (built with the oldest of them); ``floor`` None: one wheel per Python."""
    out = [WheelTarget(p, (p,), False) for p in pythons if floor is None or _minor(p) < _minor(floor)]
    rest = tuple(p for p in pythons if floor is not None and _minor(p) >= _minor(floor))
    if rest:
        out.append(WheelTarget(rest[0], rest, True))
    return out


def is_extension_module(name: str) -> bool:
    """A Python extension module of the wheel; not a library bundled beside it (``<dist>.libs/``)."""
    return name.endswith(".so") and not name.split("/", 1)[0].endswith(".libs")


def extension_modules(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return [n for n in zf.namelist() if is_extension_module(n)]


def audit(modules: dict[str, bytes], minimum: str) -> dict[str, str]:
    """abi3audit on each stable-ABI module (name -> ELF bytes) at the Python ``minimum`` stable ABI.

    Returns name -> problem for every module that is not clean (uses symbols
    outside the limited API, or ones newer than ``minimum``); {} when all are.
    """
    exe = shutil.which("abi3audit", path=str(Path(sys.executable).parent)) or shutil.which("abi3audit")
    cmd = [exe] if exe else [sys.executable, "-m", "abi3audit"]
    with tempfile.TemporaryDirectory(prefix="abi3audit-") as tmp:
        paths = {}
        for i, (name, data) in enumerate(sorted(modules.items())):
            path = Path(tmp) / str(i) / name.rsplit("/", 1)[-1]  # abi3audit needs the .abi3.so suffix
            path.parent.mkdir()
            path.write_bytes(data)
            paths[str(path)] = name
        out = subprocess.run([*cmd, *paths, "--report", "--assume-minimum-abi3", minimum],
                             capture_output=True, text=True, check=False)
    try:
        specs = json.loads(out.stdout)["specs"]
        results = {paths[spec]: body["object"]["result"] for spec, body in specs.items()}
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        why = f"abi3audit gave no report (exit {out.returncode}): {out.stderr.strip()[-500:]}"
        return dict.fromkeys(modules, why)
    bad = {name: "abi3audit did not check it" for name in set(modules) - set(results)}
    for name, res in results.items():
        if not res.get("is_abi3") or res.get("non_abi3_symbols") or not res.get("is_abi3_baseline_compatible"):
            outside, newer = res.get("non_abi3_symbols") or [], res.get("future_abi3_objects") or {}
            parts = ([f"symbols outside the stable ABI: {', '.join(map(str, outside))}"] if outside else []) + \
                ([f"newer than {minimum}: {', '.join(map(str, newer))}"] if newer else [])
            bad[name] = "; ".join(parts) or f"not a clean stable-ABI {minimum} module"
    return bad


def abi3_status(wheel: Path, minimum: str = MINIMUM) -> tuple[bool, str]:
    """(every compiled module is a clean module of the Python ``minimum`` stable ABI, explanation)."""
    mods = extension_modules(wheel)
    if not mods:
        return False, "no compiled modules (pure wheel)"
    not_named = [m for m in mods if not m.endswith(".abi3.so")]
    if not_named:
        return False, f"not stable-ABI modules: {', '.join(not_named)}"
    with zipfile.ZipFile(wheel) as zf:
        bad = audit({m: zf.read(m) for m in mods}, minimum)
    if bad:
        return False, "; ".join(f"{m}: {why}" for m, why in sorted(bad.items()))
    return True, f"{len(mods)} module(s) use only the Python {minimum} stable ABI (abi3audit)"


def tag_problems(tags: frozenset[Tag], modules: dict[str, bytes]) -> tuple[list[str], str]:
    """(problems, summary) of a wheel's Python/ABI tags against its compiled ``modules`` (name -> bytes).

    ``cpXY-abi3``: every module is a stable-ABI module within the 3.Y stable ABI
    (abi3audit), so the one wheel works on every CPython from 3.Y on.
    ``cp3X-cp3X``: its ``cpython-3X`` modules are for that Python, its stable-ABI
    modules need no newer stable ABI than 3.X (else import fails there).
    """
    problems: list[str] = []
    notes: list[str] = []
    for interp, abi in sorted({(t.interpreter, t.abi) for t in tags}):
        m = re.fullmatch(r"cp3([0-9]+)", interp)
        if not m:
            if modules:
                problems.append(f"Python tag {interp}-{abi} on a wheel with compiled modules")
            continue
        version = f"3.{m.group(1)}"
        if abi == ABI_TAG:
            specific = [n for n in modules if not n.endswith(".abi3.so")]
            problems += [f"{n}: not a stable-ABI module in a {interp}-abi3 wheel" for n in specific]
        elif abi == interp:
            specific = [n for n in modules if not n.endswith(".abi3.so")]
            problems += [f"{n}: not a module for CPython {version}" for n in specific
                         if re.search(r"\.cpython-([0-9]+)", n) and f".cpython-{interp[2:]}" not in n]
        else:
            problems.append(f"ABI tag {abi} does not go with {interp}")
            continue
        stable = {n: data for n, data in modules.items() if n.endswith(".abi3.so")}
        bad = audit(stable, version) if stable else {}
        problems += [f"{n}: {why}" for n, why in sorted(bad.items())]
        if stable and not bad:
            notes.append(f"{interp}-{abi}: {len(stable)} stable-ABI module(s) within Python {version}'s (abi3audit)")
    return problems, "; ".join(notes)


def wheel_abi(src: Path, python: str, wheel: Path) -> tuple[str | None, str]:
    """(the stable ABI to tag ``wheel`` for, None for a cp3X-cp3X wheel; why): what ``plan`` planned.

    A Python from the tree's floor on makes the one stable-ABI wheel of every
    such Python, so each module must pass abi3audit at the floor (else
    BuildFailed); an older one builds without the newer-ABI modules (upstream
    skips them) and makes a wheel for itself alone.
    """
    found = stable_abi(src)
    if not found.serves(python):
        newer = ", ".join(m for m, v in found.modules.items() if _minor(v) > _minor(python))
        return None, f"Python {python} is older than the stable ABI {found.floor} of {newer}: a wheel for it alone"
    ok, why = abi3_status(wheel, found.floor)
    if not ok:
        # plan promised one wheel for every Python from the floor on: a cp3X-only wheel would leave the others out.
        raise BuildFailed(f"plan makes one {found.tag} wheel for Python {found.floor} and newer (USE_SABI of "
                          f"the tree's modules), but {why}")
    return found.floor, why


def retag(wheel: Path, floor: str | None, platform_tag: str) -> Path:
    """Give ``wheel`` its final tags with ``wheel tags`` (``cpXY-abi3`` for floor ``3.Y``); the new path."""
    cmd = [sys.executable, "-m", "wheel", "tags", "--remove", f"--platform-tag={platform_tag}"]
    if floor:
        cmd += [f"--python-tag={python_tag(floor)}", f"--abi-tag={ABI_TAG}"]
    out = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True, check=False, cwd=wheel.parent)
    if out.returncode != 0:
        raise BuildFailed(f"wheel tags failed: {out.stderr.strip()}")
    return wheel.parent / out.stdout.strip().splitlines()[-1]
