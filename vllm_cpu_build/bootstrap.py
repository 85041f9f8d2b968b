"""Pick the interpreter that runs the shipped toolchain on a worker (stdlib only).

Runs with the worker's own python before anything is installed: it prints
that interpreter when it already has every module of ``requirements.txt``
(written by the master next to the package in the toolchain tarball), else
creates or reuses a venv cached per requirements hash under
``~/.cache/vllm-cpu-buildbot`` (system site packages visible, so a
provisioned host's packages are reused) and prints its python.  Progress
goes to stderr; stdout's last line is the interpreter.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(os.path.dirname(HERE), "requirements.txt")


def read_requirements(path: str = REQUIREMENTS) -> list[tuple[str, str]]:
    """(requirement, import name) pairs from ``requirement  # module`` lines."""
    entries = []
    with open(path) as fh:
        for line in fh:
            req, _, mod = line.partition(" # ")
            if req.strip():
                entries.append((req.strip(), mod.strip()))
    return entries


def applies(req: str) -> bool:
    """Whether a requirement's environment marker holds here (iced-x86 is x86-only)."""
    if ";" not in req:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # packaging is a requirement too: the venv path follows anyway
        return True
    return Marker(req.split(";", 1)[1]).evaluate()


def main() -> int:
    entries = read_requirements()
    reqs = [r for r, _ in entries]
    missing = [m for r, m in entries if m and applies(r) and importlib.util.find_spec(m) is None]
    if not missing:
        print(sys.executable)
        return 0
    print("toolchain: missing " + ", ".join(missing) + " in " + sys.executable, file=sys.stderr)
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]
    root = os.path.join(os.path.expanduser("~"), ".cache", "vllm-cpu-buildbot", "venv-" + key)
    py = os.path.join(root, "bin", "python")
    if not os.path.exists(os.path.join(root, ".ok")):
        print("toolchain: creating " + root, file=sys.stderr)
        venv.create(root, with_pip=True, system_site_packages=True, clear=True)
        subprocess.check_call([py, "-m", "pip", "install", "-q", *reqs], stdout=sys.stderr)
        open(os.path.join(root, ".ok"), "w").close()
    print(py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
