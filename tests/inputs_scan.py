"""Which build properties the steps, factories and release report read, found in their source.

``getProperty("x")``, ``Property("x")``, ``%(prop:x)s``, ``opt(flag, "x")``,
``props.get("x")`` / ``props["x"]`` (also ``b.props...``: the properties a
step collected for ``farm/decisions.py``) and the ``*_PROPS`` /
``SAME_RELEASE`` lists: a new read shows up without anyone listing it.  Used by
tests/unit/test_inputs.py and the adversarial e2e suite.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Every module of the layers that handle build properties: a fixed list hid
# reads in modules split off later (notify_text.py's ``reason``).
SOURCES = sorted(p for d in ("steps", "master", "farm") for p in (REPO / d).rglob("*.py"))
_PROP_RE = re.compile(r"%\(prop:([A-Za-z_][A-Za-z0-9_]*)")
_READERS = {"getProperty", "hasProperty", "Property"}
_DICT_NAMES = {"props", "p", "properties"}  # variables holding a build's/request's properties


def _holds_props(node: ast.AST) -> bool:
    """``props``, ``p``, ``properties`` or ``x.props`` (a collected build's or request's properties)."""
    if isinstance(node, ast.Name):
        return node.id in _DICT_NAMES
    return isinstance(node, ast.Attribute) and node.attr == "props"


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def property_reads() -> dict[str, list[str]]:
    """property name -> ["file:line", ...] wherever the steps, factories or report read it."""
    found: dict[str, list[str]] = {}

    def add(name: str | None, path: Path, node: ast.AST) -> None:
        if name:
            found.setdefault(name, []).append(f"{path.relative_to(REPO)}:{node.lineno}")

    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if fname in _READERS and node.args:
                    add(_const(node.args[0]), path, node)
                elif fname in {"opt", "_opt"} and len(node.args) >= 2:
                    add(_const(node.args[1]), path, node)
                elif fname == "get" and isinstance(f, ast.Attribute) and _holds_props(f.value) and node.args:
                    add(_const(node.args[0]), path, node)
            elif isinstance(node, ast.Subscript) and _holds_props(node.value):
                add(_const(node.slice), path, node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in _PROP_RE.findall(node.value):
                    add(name, path, node)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.List | ast.Tuple):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any(t.endswith("_PROPS") or t == "SAME_RELEASE" for t in targets):
                    for elt in node.value.elts:
                        add(_const(elt), path, node)
    return found



READS = property_reads()
