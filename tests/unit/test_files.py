"""vllm_cpu_build/files.py: the one loader behind variants.json, the settings file and the worker registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm import settings
from vllm_cpu_build import variants
from workers import registry

LOADERS = [
    pytest.param(variants.load, variants.VariantsError, "not found", "{", "not valid JSON", id="variants"),
    pytest.param(settings.load, settings.SettingsError, "settings file not found (from $VLLM_CPU_BUILDBOT_SETTINGS)",
                 "[upstream\n", "not valid TOML", id="settings"),
    pytest.param(registry.load, registry.RegistryError, "worker registry not found", "[[worker]\n",
                 "not valid TOML", id="registry"),
]


@pytest.mark.parametrize(("load", "error", "missing", "broken", "said"), LOADERS)
def test_every_input_file_names_itself_and_what_is_wrong(tmp_path: Path, load, error, missing: str, broken: str,
                                                          said: str) -> None:
    path = tmp_path / "input"
    with pytest.raises(error) as exc:
        load(path)
    assert str(exc.value) == f"{path}: {missing}"
    path.write_text(broken)
    with pytest.raises(error, match=f"^{path}: {said}: "):
        load(path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(error, match=f"^{path}: not UTF-8 text"):
        load(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(error, match=f"^{path}: cannot read it: Is a directory"):
        load(path)
