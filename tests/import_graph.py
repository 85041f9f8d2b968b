"""The project's import graph between its top-level packages, and the layering rule it must obey.

Run ``python -m tests.import_graph`` to print every package-to-package edge
with the modules that make it (``--violations`` prints only the edges the
layering forbids; exit 1 when there is one; ``--sizes`` prints the modules
over 500 lines and functions over 80, the guide's limits, largest first).
``tests/unit/test_layout.py`` asserts the rule from this graph: every import
statement, including the ones inside functions, read from the source with
``ast``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Layers, lowest first: a package may import only the packages listed for it.
# sandbox -> master -> steps -> farm (shared release logic) -> vllm_cpu_build (toolchain);
# workers (the admin CLI + registry) sits beside farm; testbed (stand-ins) serves sandbox and tests.
ALLOWED: dict[str, set[str]] = {
    "vllm_cpu_build": set(),
    "detector": set(),
    "farm": {"vllm_cpu_build"},
    "workers": {"farm", "vllm_cpu_build"},
    "steps": {"farm", "vllm_cpu_build"},
    "master": {"steps", "farm", "workers", "vllm_cpu_build"},
    "testbed": {"vllm_cpu_build", "farm"},
    "sandbox": {"master", "steps", "farm", "workers", "vllm_cpu_build", "testbed"},
}
PACKAGES = set(ALLOWED) | {"tests"}


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return "detector" if rel[0] == "detector" else rel[0]


def sources() -> list[Path]:
    out: list[Path] = []
    for pkg in ALLOWED:
        base = ROOT / ("detector/src" if pkg == "detector" else pkg)
        out += [p for p in sorted(base.rglob("*.py")) if "fixture_upstream/src" not in p.as_posix()]
    return out + [ROOT / "master" / "master.cfg"]


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file (module level and inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def edges() -> dict[tuple[str, str], list[str]]:
    """{(importer package, imported package): [importing files]} between the project's packages."""
    graph: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sources():
        src = package_of(path)
        for dst in sorted(imported_roots(path) & PACKAGES - {src}):
            graph[(src, dst)].append(str(path.relative_to(ROOT)))
    return dict(graph)


def violations() -> dict[tuple[str, str], list[str]]:
    return {e: files for e, files in edges().items() if e[1] not in ALLOWED[e[0]]}


MAX_MODULE, MAX_FUNCTION = 500, 80  # lines (tables and data aside)


def sizes(packages: list[str] | None = None, top: int | None = None) -> list[tuple[int, str]]:
    """(lines, "path" or "path:function") of every module and function of ``packages``, largest first;
    ``top``: only the ``top`` largest of each kind."""
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for path in sources():
        if packages is not None and package_of(path) not in packages or path.suffix != ".py":
            continue
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        modules.append((len(text.splitlines()), rel))
        for node in ast.walk(ast.parse(text, rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append(((node.end_lineno or node.lineno) - node.lineno + 1, f"{rel}:{node.name}"))
    modules.sort(reverse=True)
    functions.sort(reverse=True)
    return modules[:top] + functions[:top]


def oversized(packages: list[str] | None = None) -> list[tuple[int, str]]:
    """Modules over MAX_MODULE lines and functions over MAX_FUNCTION lines."""
    return [(n, what) for n, what in sizes(packages) if n > (MAX_FUNCTION if ":" in what else MAX_MODULE)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.import_graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--violations", action="store_true", help="print only the edges the layering forbids")
    p.add_argument("--sizes", action="store_true",
                   help=f"print modules over {MAX_MODULE} and functions over {MAX_FUNCTION} lines, and the largest")
    args = p.parse_args(argv)
    if args.sizes:
        for n, what in oversized():
            print(f"{n:5d}  {what}  OVER")
        print("largest:")
        for n, what in sizes(top=5):
            print(f"{n:5d}  {what}")
        return 1 if oversized() else 0
    shown = violations() if args.violations else edges()
    for (src, dst), files in sorted(shown.items()):
        bad = "" if dst in ALLOWED[src] else "  FORBIDDEN"
        print(f"{src} -> {dst}{bad}: {', '.join(files)}")
    return 1 if violations() else 0


if __name__ == "__main__":
    sys.exit(main())
