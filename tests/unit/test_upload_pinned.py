"""``upload --built-sha256``: the publisher uploads the bytes the build recorded, or nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.files import sha256_of
from vllm_cpu_build.upload import built_digests, not_as_built

REPO = Path(__file__).resolve().parents[2]
A, B = "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl", "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_aarch64.whl"


def test_built_digests_need_one_hex_sha256_per_wheel() -> None:
    wheels = [Path(A), Path(B)]
    assert built_digests([], wheels) == {}
    assert built_digests([f"{A}={'AB' * 32}", f"{B}={'cd' * 32}"], wheels) == {A: "ab" * 32, B: "cd" * 32}
    for pairs, words in (([f"{A}=zz"], "expected WHEEL_NAME=<64 hex digits>"),
                         ([f"{A}={'ab' * 32}", f"{A}={'ab' * 32}"], "given twice"),
                         ([f"other.whl={'ab' * 32}"], "other.whl is not among the wheels given"),
                         ([f"{A}={'ab' * 32}"], f"no recorded sha256 for {B}")):
        with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
            built_digests(pairs, wheels)


def test_not_as_built_names_both_hashes() -> None:
    assert not_as_built({A: "ab" * 32}, {A: "ab" * 32}) == []
    assert not_as_built({A: "cd" * 32}, {A: "ab" * 32}) == [
        f"{A}: not the wheel the build made: received sha256 {'cd' * 32}, the build recorded sha256 {'ab' * 32}"]


def test_a_swapped_wheel_uploads_nothing_and_needs_no_index(tmp_path: Path) -> None:
    whl = tmp_path / A
    whl.write_bytes(b"not what the build made")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
    env.update(PYTHONPATH=str(REPO), TWINE_USERNAME="x", TWINE_PASSWORD="x")
    r = subprocess.run([sys.executable, "-m", "vllm_cpu_build", "upload", "--variant", "vllm-cpu",
                        "--repository-url", "http://127.0.0.1:9/", "--simple-url", "http://127.0.0.1:9/simple/",
                        "--built-sha256", f"{A}={'ab' * 32}", "--json", str(whl)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["kind"] == "error" and doc["error"].startswith("nothing uploaded; ")
    assert f"received sha256 {sha256_of(whl)}, the build recorded sha256 {'ab' * 32}" in doc["error"]
    assert "verify" not in r.stderr  # refused before anything else ran
