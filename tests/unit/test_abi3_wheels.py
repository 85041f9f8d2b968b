"""The 0.27+ wheel shape on the fixture upstream: a helper module of the 3.11 stable ABI.

Upstream 0.27 adds ``fs_io_C`` and ``spinloop`` with ``USE_SABI 3.11``, built
only with Python >= 3.11.  Here the fixture tree gets such a module (the
Py_buffer calls that need the 3.11 stable ABI), is planned, patched and built
for real, and the wheel's tags are proven: abi3audit passes every module at
3.11 (not at 3.8), verify accepts ``cp311-abi3`` and refuses the same bytes
tagged ``cp38-abi3`` or ``cp310-cp310``, the wheel installs and imports on
this host's CPython 3.11 and (where a Debian trixie root can be made) on
trixie's 3.13.  A module that calls outside the limited API fails the build.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.tags import parse_tag

from testbed.fixture_upstream import MIRROR
from tests import wheelkit
from vllm_cpu_build import abi3, build, patch, plan
from vllm_cpu_build.errors import BuildFailed
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.variants import load
from vllm_cpu_build.verify import verify_wheel

VARIANT = load().get("vllm-cpu")
PLAT = "manylinux_2_28_x86_64"

# Like upstream's csrc/fs_io.cpp: Py_buffer entered the stable ABI in 3.11.
HELPER = r"""
#include <Python.h>
%(extra_decl)s
static PyObject *nbytes(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n = view.len;
    PyBuffer_Release(&view);
    %(extra_call)s
    return PyLong_FromSsize_t(n);
}
static PyMethodDef methods[] = {{"nbytes", nbytes, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "fs_io_C", NULL, -1, methods};
PyMODINIT_FUNC PyInit_fs_io_C(void) { return PyModule_Create(&mod); }
"""
# The fixture's _C stand-in for hand-made wheels: the 3.8 stable ABI.
C_MODULE = r"""
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_C", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&mod); }
"""
# Outside the limited API in every version: abi3audit must name it.
BROKEN = {"extra_decl": "extern int PyCode_Addr2Line(void *, int);",
          "extra_call": "if (n < 0) n = PyCode_Addr2Line(arg, 0);"}
CLEAN = {"extra_decl": "", "extra_call": ""}

# Upstream's shape: defined before the CPU branch, only for Python >= 3.11.
CMAKE_HELPER = """
if(Python_VERSION VERSION_GREATER_EQUAL "3.11")
  Python_add_library(fs_io_C MODULE USE_SABI 3.11 WITH_SOABI csrc/fs_io.c)
  install(TARGETS fs_io_C LIBRARY DESTINATION vllm COMPONENT fs_io_C)
endif()

"""


def _helper_tree(fixture_repo: Path, dest: Path, source: dict[str, str]) -> Path:
    """A copy of the fixture upstream with a USE_SABI 3.11 ``fs_io_C`` module, as upstream 0.27 has it."""
    shutil.copytree(fixture_repo, dest, symlinks=True)
    (dest / "csrc" / "fs_io.c").write_text(HELPER % source)
    cmake = dest / "CMakeLists.txt"
    text = cmake.read_text()
    anchor = 'if (VLLM_TARGET_DEVICE STREQUAL "cpu")'
    assert anchor in text
    cmake.write_text(text.replace(anchor, CMAKE_HELPER + anchor, 1))
    setup = dest / "setup.py"
    text = setup.read_text()
    anchor = '    ext_modules.append(CMakeExtension(name="vllm._C"))\n'
    assert anchor in text
    setup.write_text(text.replace(anchor, anchor + '    if sys.version_info >= (3, 11):\n'
                                  '        ext_modules.append(CMakeExtension(name="vllm.fs_io_C"))\n', 1))
    return dest


def _build(src: Path, out: Path) -> build.BuildResult:
    patch.patch_tree(src, VARIANT, "x86_64", "0.12.0")
    return build.build(build.BuildOptions(VARIANT, src, out, log=io.StringIO(), fetch_mirror=MIRROR))


@pytest.fixture(scope="module")
def helper_wheel(fixture_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, build.BuildResult]:
    if host_arch() != "x86_64" or sys.version_info < (3, 11):
        pytest.skip("builds the x86_64 fixture with CPython >= 3.11")
    root = tmp_path_factory.mktemp("sabi311")
    src = _helper_tree(fixture_repo, root / "src", CLEAN)
    return src, _build(src, root / "dist")


@pytest.mark.slow
def test_plan_reads_the_311_floor_from_the_tree(helper_wheel) -> None:
    src, _ = helper_wheel
    found = abi3.stable_abi(src)
    assert found.modules == {"fs_io_C": "3.11", "_C": "3.8"} and found.floor == "3.11"
    p = plan.make_plan("0.12.0", plan.requires_python(src), variants=["vllm-cpu"], arches=["x86_64"],
                       floor=plan.abi3_floor(src))
    (b,) = p.builds
    assert [(w.python, w.serves, w.tag) for w in b.wheels] == [
        ("3.10", ["3.10"], "cp310-cp310"), ("3.11", ["3.11", "3.12", "3.13"], "cp311-abi3")]
    assert b.build_pythons == ["3.10", "3.11"] and not b.abi3


@pytest.mark.slow
def test_build_tags_the_wheel_cp311_abi3_and_abi3audit_proves_it(helper_wheel) -> None:
    _, res = helper_wheel
    wheel = Path(res.wheel)
    assert res.tags == [f"cp311-abi3-{PLAT}"] and res.abi3, res.abi3_reason
    assert wheel.name == f"vllm_cpu-0.12.0-cp311-abi3-{PLAT}.whl"
    with zipfile.ZipFile(wheel) as zf:
        mods = sorted(n for n in zf.namelist() if n.endswith(".so"))
    assert mods == ["vllm/_C.abi3.so", "vllm/fs_io_C.abi3.so"]
    ok, why = abi3.abi3_status(wheel, "3.11")
    assert ok, why
    # The same modules are not a 3.8 stable-ABI wheel: the helper calls 3.11's Py_buffer API.
    ok, why = abi3.abi3_status(wheel, "3.8")
    assert not ok and "fs_io_C" in why and "PyObject_GetBuffer" in why and "vllm/_C.abi3.so" not in why


@pytest.mark.slow
def test_verify_accepts_cp311_abi3_only_when_it_is_right(helper_wheel, tmp_path: Path) -> None:
    _, res = helper_wheel
    checks = {c.name: c for c in verify_wheel(res.wheel, VARIANT, "x86_64").checks}
    assert checks["tags"].ok, checks["tags"].detail
    assert "cp311-abi3: 2 stable-ABI module(s) within Python 3.11's (abi3audit)" in checks["tags"].detail
    # The same bytes claiming more: cp38-abi3 (3.8-3.10 would fail to import) or a cp310 wheel.
    for floor, tag in (("3.8", "cp38-abi3"), (None, "cp310-cp310")):
        copy = tmp_path / tag / Path(res.wheel).name
        copy.parent.mkdir()
        shutil.copy(res.wheel, copy)
        if floor is None:
            out = subprocess.run([sys.executable, "-m", "wheel", "tags", "--remove", "--python-tag=cp310",
                                  "--abi-tag=cp310", str(copy)], capture_output=True, text=True, check=True)
            lied = copy.parent / out.stdout.strip().splitlines()[-1]
        else:
            lied = abi3.retag(copy, floor, PLAT)
        assert tag in lied.name
        checks = {c.name: c for c in verify_wheel(lied, VARIANT, "x86_64").checks}
        assert not checks["tags"].ok and "vllm/fs_io_C.abi3.so" in checks["tags"].detail, checks["tags"].detail
        assert "PyObject_GetBuffer" in checks["tags"].detail


def _import_check(python: str, wheel: Path, work: Path) -> list[str]:
    """Install ``wheel`` into a fresh venv of ``python`` and call both modules; the argv to run."""
    script = ("import json, vllm._C, vllm.fs_io_C as f, sys; "
              "print(json.dumps([sys.version_info[:2], f.nbytes(b'abcd'), vllm._C.__name__]))")
    work.mkdir(parents=True, exist_ok=True)
    return ["sh", "-ec", f"{python} -m venv {work}/venv && {work}/venv/bin/pip install -q --no-deps --no-index "
            f"{wheel} && cd {work} && {work}/venv/bin/python -c \"{script}\""]


@pytest.mark.slow
def test_wheel_installs_and_imports_on_the_lowest_python_it_serves(helper_wheel, tmp_path: Path) -> None:
    _, res = helper_wheel
    out = subprocess.run(_import_check(sys.executable, Path(res.wheel), tmp_path), capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[3, 11], 4, "vllm._C"]


@pytest.mark.slow
def test_wheel_installs_and_imports_on_trixies_python_313(helper_wheel, tmp_path: Path) -> None:
    """The newest CPython this machine can run: Debian trixie's 3.13, in a root made with mmdebstrap."""
    from tests import trixie_root

    why = trixie_root.unavailable()
    if why:
        pytest.skip(why)
    from vllm_cpu_build.buildroot import BuildRoot

    _, res = helper_wheel
    runner = BuildRoot(str(trixie_root.tarball()))
    work = tmp_path / "w"
    runner.expose(work)
    runner.expose(Path(res.wheel).parent, writable=False)
    out = runner.run(_import_check("python3", Path(res.wheel), work))
    assert out.returncode == 0, (out.stdout or "")[-2000:] + (out.stderr or "")[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[3, 13], 4, "vllm._C"]


def _module(source: dict[str, str], out: Path) -> bytes:
    """``fs_io_C.abi3.so`` compiled against this CPython's headers for the 3.11 limited API."""
    inc = sysconfig.get_paths()["include"]
    return wheelkit.compile_shared(HELPER % source, out / "fs_io_C.abi3.so",
                                   [f"-I{inc}", "-DPy_LIMITED_API=0x030B0000"]).read_bytes()


def _wheel(out: Path, tag: str, fs_io: bytes) -> Path:
    """A vllm-cpu wheel of the fixture's shape: a vector-free ``_C`` and the ``fs_io_C`` helper."""
    inc = sysconfig.get_paths()["include"]
    c = wheelkit.compile_shared(C_MODULE, out / "c" / "_C.abi3.so", [f"-I{inc}", "-DPy_LIMITED_API=0x03080000"])
    return wheelkit.make_wheel(out, "vllm-cpu", "0.12.0", {
        "vllm/__init__.py": b"", "vllm/_C.abi3.so": c.read_bytes(), "vllm/fs_io_C.abi3.so": fs_io},
        tags=[f"{tag}-{PLAT}"])


@pytest.mark.skipif(sys.version_info < (3, 11) or host_arch() != "x86_64", reason="CPython 3.11 headers, x86_64")
def test_tags_of_a_helper_wheel_are_proven_module_by_module(tmp_path: Path) -> None:
    """Without the pipeline: the same two modules under each tag; only cp311-abi3 is right."""
    fs_io = _module(CLEAN, tmp_path / "clean")
    ok = _wheel(tmp_path / "ok", "cp311-abi3", fs_io)
    problems, note = abi3.tag_problems(frozenset(parse_tag(f"cp311-abi3-{PLAT}")), {
        "vllm/_C.abi3.so": zipfile.ZipFile(ok).read("vllm/_C.abi3.so"), "vllm/fs_io_C.abi3.so": fs_io})
    assert problems == [] and "2 stable-ABI module(s) within Python 3.11's" in note
    for tag in ("cp38-abi3", "cp310-cp310"):
        problems, _ = abi3.tag_problems(frozenset(parse_tag(f"{tag}-{PLAT}")), {"vllm/fs_io_C.abi3.so": fs_io})
        assert len(problems) == 1 and "PyObject_GetBuffer" in problems[0], problems
    # Installed with pip on this CPython 3.11 (the lowest the wheel serves), both modules import and work.
    out = subprocess.run(_import_check(sys.executable, ok, tmp_path / "venv"), capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[3, 11], 4, "vllm._C"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="CPython 3.11 headers")
def test_module_outside_the_limited_api_fails_abi3audit(tmp_path: Path) -> None:
    bad = abi3.audit({"vllm/fs_io_C.abi3.so": _module(BROKEN, tmp_path)}, "3.11")
    assert "PyCode_Addr2Line" in bad["vllm/fs_io_C.abi3.so"]
    problems, _ = abi3.tag_problems(frozenset(parse_tag(f"cp311-abi3-{PLAT}")),
                                    {"vllm/fs_io_C.abi3.so": _module(BROKEN, tmp_path)})
    assert len(problems) == 1 and "PyCode_Addr2Line" in problems[0]
    assert abi3.audit({"vllm/fs_io_C.abi3.so": _module(CLEAN, tmp_path / "c")}, "3.11") == {}


@pytest.mark.slow
def test_module_outside_the_limited_api_fails_the_build(fixture_repo: Path, tmp_path: Path) -> None:
    if host_arch() != "x86_64" or sys.version_info < (3, 11):
        pytest.skip("builds the x86_64 fixture with CPython >= 3.11")
    # plan promised one cp311-abi3 wheel, so the build stops instead of tagging it.
    src = _helper_tree(fixture_repo, tmp_path / "src", BROKEN)
    with pytest.raises(BuildFailed, match=r"one cp311-abi3 wheel .* PyCode_Addr2Line"):
        _build(src, tmp_path / "dist")
    assert not list((tmp_path / "dist").glob("*.whl"))
