"""Docker images: checked as files here (no Docker engine on this machine)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from vllm_cpu_build import variants

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _build_images():
    spec = importlib.util.spec_from_file_location("build_images", ROOT / "docker" / "build_images.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tags_derive_from_variants_json() -> None:
    cmds = _build_images().commands("0.11.2", "example/vllm", latest=True, only=None)
    tags = [c[i + 1] for c in cmds for i, a in enumerate(c) if a == "-t"]
    shorts = [v.short for v in variants.load().for_release("0.11.2")]
    assert tags == [t for s in shorts for t in (f"example/vllm:{s}-0.11.2", f"example/vllm:{s}-latest")]
    # From the unified-kernel release on only vllm-cpu exists, so only its image.
    assert len(_build_images().commands("0.17.0", "r", latest=False, only=None)) == 1


def test_every_build_arg_is_declared_and_every_required_arg_passed() -> None:
    text = DOCKERFILE.read_text()
    declared = dict(re.findall(r"^ARG (\w+)(?:=(.*))?$", text, re.M))
    cmd = _build_images().commands("0.11.2", "r", latest=False, only=["vllm-cpu-avx512"])[0]
    passed = {cmd[i + 1].split("=", 1)[0] for i, a in enumerate(cmd) if a == "--build-arg"}
    assert passed <= set(declared)
    required = {name for name, default in declared.items() if default == "" and f"${{{name}:+" not in text}
    assert required <= passed, f"required build args not passed: {required - passed}"


def test_entrypoint_is_executable_and_copied() -> None:
    entry = ROOT / "docker" / "entrypoint.sh"
    assert os.access(entry, os.X_OK)
    assert "COPY --chown=vllm docker/entrypoint.sh" in DOCKERFILE.read_text()
    assert "vllm-cpu-detect --check-installed" in entry.read_text()
