"""The detector's packaged data is variants.json, not a second copy of it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from detect_helpers import DETECTOR, REPO
from packaging.version import Version
from vllm_cpu_detect import _variants
from vllm_cpu_detect.releases import boundaries, contains, parse_release, parse_specifier

from vllm_cpu_build.variants import load


def _sync_module():
    spec = importlib.util.spec_from_file_location("detector_sync_data", DETECTOR / "sync_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_packaged_copy_matches_variants_json() -> None:
    sync = _sync_module()
    assert sync.TARGET.read_text() == sync.render(sync.derive()), \
        "detector data is stale: run python detector/sync_data.py"
    res = subprocess.run([sys.executable, str(DETECTOR / "sync_data.py"), "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_packaged_copy_has_what_the_detector_needs() -> None:
    catalog = load()
    assert [v["package"] for v in _variants.VARIANTS] == catalog.names()
    for raw, v in zip(_variants.VARIANTS, catalog.variants, strict=True):
        assert raw["cpu_flags"] == {a: list(s.cpu_flags) for a, s in v.arches.items()}
        assert raw["short"] == v.short and raw["target_cpus"] == v.target_cpus
    assert catalog.project["torch_index_url"] == _variants.TORCH_INDEX_URL
    assert catalog.project["unified_x86_release"] == _variants.UNIFIED_X86_RELEASE


def _variants_copy(tmp_path: Path, edit) -> Path:
    raw = json.loads((REPO / "variants.json").read_text())
    edit(raw)
    (tmp_path / "readmes").symlink_to(REPO / "readmes")
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_change_to_variants_json_makes_the_check_fail(tmp_path: Path) -> None:
    def edit(raw: dict) -> None:
        raw["variants"][1]["arches"]["x86_64"]["cpu_flags"].append("avx512cd")
    path = _variants_copy(tmp_path, edit)
    res = subprocess.run([sys.executable, str(DETECTOR / "sync_data.py"), "--check", "--variants-file", str(path)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and "stale" in res.stderr
    assert '"avx512cd"' in _sync_module().render(_sync_module().derive(path))


def test_generator_refuses_specifiers_the_detector_cannot_evaluate(tmp_path: Path) -> None:
    def edit(raw: dict) -> None:
        raw["variants"][1]["releases"] = ">=0.10.0,!=0.12.0,<0.17.0"
    with pytest.raises(ValueError, match="unsupported specifier"):
        _sync_module().derive(_variants_copy(tmp_path, edit))


VERSIONS = ["0.9.2", "0.10.0", "0.10.0rc1", "0.10.1.post1", "0.10.2", "0.11.0", "0.11.0rc2", "0.11.2",
            "0.12.0", "0.13.0.dev3", "0.16.0", "0.16.0.post2", "0.16.9", "0.17", "0.17.0", "0.17.0rc1",
            "0.17.1", "0.33.0", "1.0.0", "0.11.2+cpu"]


@pytest.mark.parametrize("version", VERSIONS)
def test_release_ranges_agree_with_the_build_side(version: str) -> None:
    """The stdlib evaluator gives the same answer as steps.variants (packaging)."""
    rel = parse_release(version)
    for raw, v in zip(_variants.VARIANTS, load().variants, strict=True):
        assert contains(raw["releases"], rel) == v.applies_to(Version(version)), (version, raw["package"])


def test_release_parsing() -> None:
    assert parse_release("v0.17.0") == parse_release("0.17") == (0, 17)
    assert parse_release("0.11.2.post2") == (0, 11, 2)
    for bad in ("latest", "0.11.x", "", "0..1"):
        with pytest.raises(ValueError):
            parse_release(bad)
    assert boundaries([">=0.10.0,<0.17.0", ">=0.11.0"]) == [(0, 10), (0, 11), (0, 17)]
    assert contains(">=0.10.0", None) and not contains(">=0.10.0,<0.17.0", None)
    with pytest.raises(ValueError):
        parse_specifier("~=0.10")
