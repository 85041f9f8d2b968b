"""The shape of the code: the worker toolchain imports nothing from the master side."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MASTER_SIDE = {"master", "steps", "sandbox", "tests", "workers", "buildbot", "twisted"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_toolchain_imports_nothing_from_the_master_side() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & MASTER_SIDE)
                 for p in sorted((ROOT / "vllm_cpu_build").rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_bootstrap_runs_before_any_dependency_is_installed() -> None:
    # It picks the interpreter that has the dependencies: stdlib only (packaging is optional inside).
    import sys

    roots = imported_roots(ROOT / "vllm_cpu_build" / "bootstrap.py") - {"__future__", "packaging"}
    assert roots <= set(sys.stdlib_module_names), roots - set(sys.stdlib_module_names)


def test_shipped_packages_are_toolchain_master_steps_workers_only() -> None:
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(packages) == ["master", "steps", "vllm_cpu_build", "workers"]
