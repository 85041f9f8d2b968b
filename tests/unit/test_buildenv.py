"""What a release needs to build, read from the tree: requirement lists, the torch pin, prerequisites."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version

from vllm_cpu_build import buildenv, reqfiles
from vllm_cpu_build.buildroot import Runner

X86 = reqfiles.Target("x86_64", "3.11")
ARM = reqfiles.Target("aarch64", "3.11")


def test_requirement_files_for_a_target(tmp_path: Path) -> None:
    req = tmp_path / "requirements"
    req.mkdir()
    (req / "common.txt").write_text("regex  # fast\nnumpy; python_version >= '3.12'\n")
    (req / "cpu.txt").write_text(
        "-r common.txt\n"
        "--extra-index-url https://download.pytorch.org/whl/cpu\n"
        'torch==2.8.0+cpu; platform_machine == "x86_64"\n'
        'torch==2.8.0; platform_machine == "aarch64"\n'
        "packaging>=24.2\n")
    x86 = reqfiles.read_file(req / "cpu.txt", X86, tmp_path)
    assert [str(r) for r in x86.requirements] == ["regex", "torch==2.8.0+cpu", "packaging>=24.2"]
    assert x86.index_urls == ["https://download.pytorch.org/whl/cpu"]
    assert x86.sources == ["requirements/cpu.txt", "requirements/common.txt"]
    assert str(reqfiles.read_file(req / "cpu.txt", ARM, tmp_path).get("torch")) == "torch==2.8.0"
    assert reqfiles.read_file(req / "cpu.txt", reqfiles.Target("x86_64", "3.12"), tmp_path).get("numpy")
    merged = reqfiles.merge(reqfiles.RequirementList([*x86.requirements]),
                            reqfiles.RequirementList([reqfiles.parse_line("packaging<30", "t", X86)]),
                            drop=("torch",))
    assert [str(r) for r in merged] == ["regex", "packaging<30,>=24.2"]
    (req / "bad.txt").write_text("torch ===== 2\n")
    with pytest.raises(reqfiles.RequirementsError, match="bad.txt:1"):
        reqfiles.read_file(req / "bad.txt", X86, tmp_path)


def test_fixture_needs_no_torch(fixture_repo: Path) -> None:
    n = buildenv.needs(fixture_repo, "x86_64", "3.11")
    assert n.torch_pin is None and n.torch_install is None
    assert {r.split(">")[0].split("=")[0] for r in n.requirements} >= {"cmake", "setuptools", "setuptools-scm"}
    assert not n.numa and not n.rust and n.gcc_fatal is None


def test_torch_problem_names_both() -> None:
    assert buildenv.torch_problem(None, None, "x86_64") is None
    assert buildenv.torch_problem("torch==2.8.0+cpu", "2.8.0+cpu", "x86_64") is None
    assert buildenv.torch_problem("torch==2.13.0", "2.13.0+cpu", "x86_64") is None  # no local part in the pin
    assert buildenv.torch_problem("torch==2.8.0+cpu", "2.13.0+cpu", "x86_64") == \
        "the wheel will pin torch==2.8.0+cpu for x86_64, the build environment has torch 2.13.0+cpu"
    assert "has no torch" in buildenv.torch_problem("torch==2.8.0+cpu", None, "x86_64")


def test_pip_errors_keeps_the_reason() -> None:
    out = ("Looking in indexes: https://pypi.org/simple\n"
           "ERROR: Cannot install torch==2.8.0+cpu because these package versions have conflicting dependencies.\n"
           "\nThe conflict is caused by:\n    The user requested torch==2.8.0+cpu\n"
           "    The user requested (constraint) torch<=2.14.1\n\nTo fix this you could try to:\n"
           "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/\n")
    said = buildenv.pip_errors(out)
    assert "The user requested torch==2.8.0+cpu" in said and "ResolutionImpossible" in said
    assert "Looking in indexes" not in said and "To fix this" not in said


def test_system_problems_name_the_fix(tmp_path: Path) -> None:
    n = buildenv.Needs([], None, None, [], [], rust=True, numa=True, gcc_fatal=Version("12.3"), gcc_silent=None)
    (tmp_path / "sh").symlink_to("/bin/sh")  # a PATH with a shell and nothing else: no cargo, no compiler
    env = {"PATH": str(tmp_path), "CXX": str(tmp_path / "no-such-c++")}
    problems = buildenv.system_problems(n, Runner(), env, "x86_64", True, Version("12.2.0"), "g++ (GNU 12.2.0)")
    text = "; ".join(problems)
    assert "requires GCC >= 12.3 for x86_64, the C++ compiler is g++ (GNU 12.2.0)" in text
    assert "numa.h not found" in text and "libnuma-dev" in text
    assert "cargo/rustc" in text
    assert not buildenv.system_problems(n, Runner(), env, "aarch64", True, Version("12.2.0"), "g++")[0].startswith(
        "this vLLM")  # the x86 gate is x86's
