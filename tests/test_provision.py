"""``workers/provision.sh``'s GCC check, run by sh against compilers of known versions.

The whole script is run in the arm64 root (tests/test_aarch64_emulated.py);
here only the version gate, which decides whether an x86_64 host can build
the VNNI/BF16/AMX packages.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GCC_OK = re.search(r"^gcc_ok\(\) .*$", (REPO / "workers" / "provision.sh").read_text(), re.M).group(0)


@pytest.mark.parametrize(("version", "ok"), [
    ("12.2.0", False), ("12.3.0", True), ("12.10.1", True), ("11.4.0", False), ("13.1.0", True), ("14", True),
    ("", False),
])
def test_gcc_gate(tmp_path: Path, version: str, ok: bool) -> None:
    cc = tmp_path / "cc"
    cc.write_text(f"#!/bin/sh\n[ \"$1\" = -dumpfullversion ] && echo '{version}'\n")
    cc.chmod(0o755)
    r = subprocess.run(["sh", "-c", f"{GCC_OK}\ngcc_ok {cc}"], capture_output=True, text=True)
    assert (r.returncode == 0) is ok, (version, r.stderr)


def test_gcc_gate_missing_compiler_is_not_ok(tmp_path: Path) -> None:
    r = subprocess.run(["sh", "-c", f"{GCC_OK}\ngcc_ok {tmp_path / 'no-such-gcc'}"], capture_output=True)
    assert r.returncode != 0


def test_this_hosts_compiler_gets_the_verdict_build_would_give() -> None:
    """provision.sh and ``steps.build`` agree on this host's g++ at upstream's 12.3 boundary."""
    from packaging.version import Version

    from vllm_cpu_build.build import probe_compiler

    compiler = probe_compiler({**os.environ, "CXX": "g++"})
    assert compiler.gnu and compiler.version is not None
    r = subprocess.run(["sh", "-c", f"{GCC_OK}\ngcc_ok g++"])
    assert (r.returncode == 0) is (compiler.version >= Version("12.3"))
