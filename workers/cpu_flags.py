"""provision.sh's CPU-feature table, derived from variants.json.

provision.sh runs on a bare build host (no repository, no Python packages),
so the flags each package needs on each arch are written into it between
``# BEGIN cpu-flags`` and ``# END cpu-flags``.  ``python -m workers.cpu_flags``
rewrites that block; tests/unit/test_provision.py fails when it is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from vllm_cpu_build.variants import load

SCRIPT = Path(__file__).resolve().parent / "provision.sh"
BLOCK = re.compile(r"(# BEGIN cpu-flags\n).*?(# END cpu-flags\n)", re.S)


def table() -> str:
    """``arch package flag...`` lines: what /proc/cpuinfo must list to run (smoke-test) each package."""
    lines = [f"{arch} {v.package} {' '.join(spec.cpu_flags)}" for v in load().variants
             for arch, spec in v.arches.items()]
    return "CPU_FLAGS='\n" + "\n".join(lines) + "\n'\n"


def sync(script: Path = SCRIPT) -> bool:
    """Rewrite the block; True when it changed."""
    text = script.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + table() + m.group(2), text)
    if new != text:
        script.write_text(new)
    return new != text


if __name__ == "__main__":
    print(f"{SCRIPT}: " + ("updated" if sync() else "up to date"))
    sys.exit(0)
