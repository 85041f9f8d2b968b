"""Dependencies per side (pyproject.toml extras) against what each side really imports.

``[worker]`` is what a build host's toolchain venv holds (``master/toolchain.py``
ships exactly that list; ``vllm_cpu_build/bootstrap.py`` installs it):
everything ``vllm_cpu_build`` imports is in it or installed by it, nothing
master-side is, and no worker-side step installs this project.  The
extras nest: worker < master < sandbox < test.  Import names are mapped to
distributions with the installed metadata (``importlib.metadata``), and a
dependency closure is read from the installed packages' own requirements.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from master import toolchain
from tests import import_graph

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
SELF = canonicalize_name(PROJECT["name"])
MASTER_ONLY = {"buildbot", "buildbot-worker", "buildbot-www", "twisted", "psycopg", "sqlalchemy", "pygithub",
               "argon2-cffi", "pypiserver"}


def names(extra: str) -> set[str]:
    """Distributions an extra names, its own extras expanded (``vllm-cpu-buildbot[worker]``)."""
    out: set[str] = set()
    for line in EXTRAS[extra]:
        req = Requirement(line)
        if canonicalize_name(req.name) == SELF:
            for inner in req.extras:
                out |= names(inner)
        elif req.marker is None or req.marker.evaluate():
            out.add(canonicalize_name(req.name))
    return out


def closure(dists: set[str]) -> set[str]:
    """``dists`` and everything they require here (installed metadata, markers evaluated, no extras)."""
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def third_party_imports(*packages: str) -> set[str]:
    roots: set[str] = set()
    for pkg in packages:
        for path in (ROOT / pkg).rglob("*.py"):
            if "fixture_upstream/src" not in path.as_posix():
                roots |= import_graph.imported_roots(path)
    return roots - set(sys.stdlib_module_names) - import_graph.PACKAGES - {"__future__"}


def distributions_of(roots: set[str]) -> dict[str, set[str]]:
    """Import name -> installed distributions providing it (tomli is not installed on 3.11+: its own name)."""
    by_module = md.packages_distributions()
    return {r: {canonicalize_name(d) for d in by_module.get(r, [r])} for r in roots}


def test_the_worker_venv_is_the_worker_extra_and_nothing_of_the_project() -> None:
    shipped = [dep for dep, _ in toolchain.requirements()]
    assert shipped == EXTRAS["worker"]
    for dep in shipped:
        req = Requirement(dep)
        assert canonicalize_name(req.name) != SELF and req.url is None, dep  # never this project, a path or URL
    assert not names("worker") & MASTER_ONLY
    assert not closure(names("worker")) & MASTER_ONLY, "a toolchain dependency pulls in a master package"


def test_everything_the_toolchain_imports_is_installed_by_the_worker_extra() -> None:
    provided = closure(names("worker")) | {"tomli"}  # tomli: the < 3.11 fallback, listed with its marker
    for module, dists in distributions_of(third_party_imports("vllm_cpu_build")).items():
        assert dists & provided, f"vllm_cpu_build imports {module} ({dists}), not installed by [worker]"


def test_each_worker_requirement_is_used_by_the_toolchain() -> None:
    # Imported, or run as a program/module (twine, auditwheel, abi3audit, cmake) or checked for (setuptools_scm).
    source = "\n".join(p.read_text() for p in (ROOT / "vllm_cpu_build").rglob("*.py"))
    for dep, module in toolchain.requirements():
        assert re.search(rf"\b{re.escape(module)}\b", source), f"[worker] {dep}: vllm_cpu_build never uses it"


def test_each_side_imports_only_what_its_extra_installs() -> None:
    for side, packages in {"master": ("farm", "steps", "master", "workers"),
                           "sandbox": ("sandbox", "testbed")}.items():
        provided = closure(names(side)) | {"tomli"}
        for module, dists in distributions_of(third_party_imports(*packages)).items():
            assert dists & provided, f"{'/'.join(packages)} import {module} ({dists}), not installed by [{side}]"


def test_the_extras_nest_and_the_base_installs_nothing() -> None:
    assert PROJECT["dependencies"] == []
    assert names("worker") < names("master") < names("sandbox") < names("test")


def test_provisioning_a_worker_installs_buildbot_worker_only() -> None:
    script = (ROOT / "workers" / "provision.sh").read_text()
    installs = re.findall(r"pip\"? install (.*)", script)
    assert installs == ["-q 'buildbot-worker>=4.3,<5'"], installs
