"""The shape of the code: imports point down the layers only (``tests/import_graph.py``).

sandbox -> master -> steps -> farm (shared release logic) -> vllm_cpu_build
(the worker toolchain); nothing shipped or in the sandbox imports ``tests``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests import import_graph

ROOT = Path(__file__).resolve().parents[2]


def test_imports_point_down_the_layers_only() -> None:
    assert import_graph.violations() == {}


def test_the_graph_sees_real_edges() -> None:
    # The rule is only as good as the graph: the known downward edges must be in it.
    graph = import_graph.edges()
    for edge in [("master", "steps"), ("steps", "farm"), ("farm", "vllm_cpu_build"), ("sandbox", "testbed")]:
        assert edge in graph, edge


def test_a_forbidden_edge_is_reported(tmp_path: Path, monkeypatch) -> None:
    # An upward import inside a function is still an edge.
    bad = tmp_path / "steps" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from master import config\n")
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    monkeypatch.setattr(import_graph, "sources", lambda: [bad])
    assert import_graph.violations() == {("steps", "master"): ["steps/bad.py"]}


def test_importing_each_layer_loads_nothing_above_it() -> None:
    # The runtime graph too: what importing a package really loads (lazy imports aside, which the AST covers).
    probe = ("import importlib, sys\n"
             "importlib.import_module(sys.argv[1])\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2:])))\n")
    project = sorted(import_graph.PACKAGES)
    for pkg, modules in {"vllm_cpu_build": ["vllm_cpu_build.cli", "vllm_cpu_build.verify"],
                         "farm": ["farm.report", "farm.settings", "farm.published"],
                         "steps": ["steps.toolchain", "steps.release", "steps.publish"],
                         "workers": ["workers.__main__"]}.items():
        for mod in modules:
            out = subprocess.run([sys.executable, "-c", probe, mod, *project], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout
            loaded = set(ast.literal_eval(out))
            assert loaded - {pkg} <= import_graph.ALLOWED[pkg], (mod, loaded)


def test_bootstrap_runs_before_any_dependency_is_installed() -> None:
    # It picks the interpreter that has the dependencies: stdlib only (packaging is optional inside).
    roots = import_graph.imported_roots(ROOT / "vllm_cpu_build" / "bootstrap.py") - {"__future__", "packaging"}
    assert roots <= set(sys.stdlib_module_names), roots - set(sys.stdlib_module_names)


def test_shipped_packages_are_the_layers_only() -> None:
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(packages) == ["farm", "master", "steps", "vllm_cpu_build", "workers"]


# Packages held to the size limits; vllm_cpu_build and steps join once their large units are split.
SMALL = ["sandbox", "testbed", "master", "farm", "workers"]


def test_modules_and_functions_are_small() -> None:
    assert import_graph.oversized(SMALL) == []
    # The measure itself: a known function, a known module.
    sized = dict((what, n) for n, what in import_graph.sizes(SMALL))
    assert 60 < sized["sandbox/core.py"] <= 500 and 0 < sized["sandbox/procs.py:until"] < 20
