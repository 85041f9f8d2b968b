"""The [github] and [images] settings, and what they add to the master's configuration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from farm import settings
from farm.names import IMAGES, IMAGES_TRIGGER, RELEASE
from master.config import build_config


def load(tmp_path: Path, text: str) -> settings.Settings:
    f = tmp_path / "s.toml"
    f.write_text(text)
    return settings.load(f)


def test_off_by_default_and_nothing_added(tmp_path: Path) -> None:
    s = settings.Settings()
    assert not s.github.enabled and not s.images.enabled
    c = build_config(s, tmp_path)
    assert IMAGES not in [b.name for b in c["builders"]]
    release = next(b for b in c["builders"] if b.name == RELEASE)
    assert [f.kwargs.get("name") or f.step_class.name for f in release.factory.steps][-1] == "fan_out"
    assert {IMAGES_TRIGGER, "force-images"}.isdisjoint(sc.name for sc in c["schedulers"])


@pytest.mark.parametrize(("text", "words"), [
    ('[github]\nenabled = true\n', "github.repository: must be owner/name"),
    ('[github]\nrepository = "o/r"\napi_url = "api.github.com"\n', "github.api_url: must be an http(s) URL"),
    ('[github]\ntoken_secret = "../token"\n', "github.token_secret"),
    ('[images]\nenabled = true\n', "images.repositories: none while images is on"),
    ('[images]\nrepositories = ["ghcr.io/o/vllm-cpu:latest"]\n', "no tag"),
    ('[images]\nrepositories = ["GHCR.io/O/Vllm"]\n', "not an image repository"),
    ('[images]\nbase_image = "python 3"\n', "images.base_image"),
    ('[images]\ntorch_index_url = "download.pytorch.org"\n', "images.torch_index_url"),
    ('[images]\nworkers = "local-x86-1"\n', "images.workers: must be a list of strings"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(settings.SettingsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, text)


def test_enabled_release_publishes_and_images_builder_exists(tmp_path: Path) -> None:
    s = load(tmp_path, '[github]\nenabled = true\nrepository = "o/vllm-cpu"\n'
                       '[images]\nenabled = true\nrepositories = ["127.0.0.1:5000/vllm-cpu", "ghcr.io/o/vllm-cpu"]\n'
                       'tls_verify = false\nauth_secret = "registry-auth"\n')
    c = build_config(s, tmp_path)
    builders = {b.name: b for b in c["builders"]}
    assert builders[IMAGES].workernames == ["local-x86-1", "local-x86-2"]  # every x86_64 worker
    release_steps = [f.kwargs.get("name") or f.step_class.name for f in builders[RELEASE].factory.steps]
    assert release_steps[-3:] == ["fan_out", "github_release", "trigger_images"]
    # A variant build that uploads after its release finished publishes on its own (hidden when skipped).
    variant = builders["vllm-cpu-aarch64"].factory.steps
    assert [f.kwargs.get("name") or f.step_class.name for f in variant][-3:] == [
        "upload", "github_release", "trigger_images"]
    assert all(f.kwargs["hideStepIf"] and f.kwargs["doStepIf"].__name__ == "uploaded_after_release"
               for f in variant[-2:])
    image_steps = [f.kwargs.get("name") or f.step_class.name for f in builders[IMAGES].factory.steps]
    assert image_steps == ["ship_toolchain", "ship_Dockerfile", "ship_entrypoint.sh",
                           "registry_credentials", "images_to_build", "forget_credentials"]
    queue = next(f for f in builders[IMAGES].factory.steps if f.step_class.name == "images_to_build")
    args = queue.kwargs["image_args"]
    assert args[args.index("--authfile") + 1] == "registry-auth.json" and "--no-tls-verify" in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "--repository"] == list(s.images.repositories)
    scheds = {sc.name: sc for sc in c["schedulers"]}
    assert IMAGES_TRIGGER in scheds and "force-images" in scheds
    assert "use_highest_postfix" in [p.name for p in scheds["force-release"]._config_kwargs["properties"]]
    # Only the named workers, and a name the registry lacks is a config error.
    s2 = replace(s, images=replace(s.images, workers=("local-x86-2",)))
    assert {b.name: b for b in build_config(s2, tmp_path)["builders"]}[IMAGES].workernames == ["local-x86-2"]
