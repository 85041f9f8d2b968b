"""Reproducible wheels: the epoch, the path maps, the archive, and the fixture built twice (real gcc, real git)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from testbed.fixture_upstream import MIRROR
from tests.wheelkit import have, make_wheel
from vllm_cpu_build import build, buildenv, patch, provenance, reproducible
from vllm_cpu_build.buildroot import Runner
from vllm_cpu_build.compare import compare, elf_sections
from vllm_cpu_build.enums import Arch, BuildEnvKind, DiffKind
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.variants import load

CATALOG = load()
VARIANTS = [v.package for v in CATALOG.for_release("0.12.0")]
ROOT = Path(__file__).resolve().parents[2]


def _git_repo(path: Path, date: str) -> Path:
    path.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    (path / "f").write_text("x\n")
    for cmd in (["init", "-q"], ["add", "f"], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", "-C", str(path), *cmd], env=env, check=True, capture_output=True)
    return path


def test_epoch_option_then_commit_time_then_worker_variable(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path / "repo", "2025-11-20T12:00:00+00:00")
    tag_time = reproducible.Epoch(1763640000, "git commit time")
    assert reproducible.source_date_epoch(repo, environ={}) == tag_time
    # A variable the worker carries does not move a tag's time: every worker must agree.
    assert reproducible.source_date_epoch(repo, environ={"SOURCE_DATE_EPOCH": "1700000000"}) == tag_time
    assert reproducible.source_date_epoch(repo, 5, environ={"SOURCE_DATE_EPOCH": "7"}).value == 5
    # An sdist tree: the worker's variable, else nothing to take it from.
    sdist_tree = tmp_path / "sdist"
    sdist_tree.mkdir()
    assert reproducible.source_date_epoch(sdist_tree, environ={"SOURCE_DATE_EPOCH": "7"}).value == 7
    assert reproducible.source_date_epoch(sdist_tree, environ={}) == reproducible.Epoch(None, "none")
    with pytest.raises(reproducible.EpochError, match="SOURCE_DATE_EPOCH 'yesterday'"):
        reproducible.source_date_epoch(sdist_tree, environ={"SOURCE_DATE_EPOCH": "yesterday"})


def test_build_environment_keeps_the_workers_flags_and_maps_the_most_specific_last() -> None:
    maps = reproducible.path_maps(Path("/w/src"), Path("/opt/env"), {"onednn": Path("/w/src/mirror/dnn")})
    assert list(maps) == ["/w/src/mirror/dnn", "/opt/env", "/w/src"]  # longest first
    env = reproducible.build_environment(1700000000, maps, {"CFLAGS": "-O2 -pipe"})
    assert env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert env["CFLAGS"].startswith("-O2 -pipe -ffile-prefix-map=/w/src=/usr/src/vllm ")
    assert env["CFLAGS"].endswith("-ffile-prefix-map=/w/src/mirror/dnn=/usr/src/fetchcontent/onednn")
    assert env["CXXFLAGS"] == env["CFLAGS"].removeprefix("-O2 -pipe ")
    assert "SOURCE_DATE_EPOCH" not in reproducible.build_environment(None, maps, {})
    # The build interpreter's own installation is mapped, a system prefix (the same on every worker) is not.
    assert reproducible.path_maps(Path("/w/src"), None, {}, "/home/w/.pyenv/versions/3.11.7") == {
        "/home/w/.pyenv/versions/3.11.7": "/usr/src/python", "/w/src": "/usr/src/vllm"}
    assert reproducible.path_maps(Path("/w/src"), None, {}, "/usr") == {"/w/src": "/usr/src/vllm"}


@pytest.mark.skipif(not have("gcc"), reason="needs gcc")
def test_the_flags_take_the_directory_and_time_out_of_a_real_object(tmp_path: Path) -> None:
    """What the flags do to gcc: __FILE__, debug info and __DATE__ no longer depend on where and when."""
    source = ('const char *where(void) { return __FILE__; }\n'
              'const char *when(void) { return __DATE__ " " __TIME__; }\n')

    def cc(directory: Path, env: dict[str, str]) -> bytes:
        directory.mkdir(parents=True)
        (directory / "m.c").write_text(source)
        subprocess.run(["gcc", "-O2", "-g", "-shared", "-fPIC", *env.get("CFLAGS", "").split(), str(directory / "m.c"),
                        "-o", str(directory / "m.so")], check=True, cwd=directory, env={**os.environ, **env})
        return (directory / "m.so").read_bytes()

    short, long = tmp_path / "a", tmp_path / "a-much-longer-directory-name" / "src"
    plain = [cc(short, {}), cc(long, {})]
    assert ".rodata" in elf_sections(*plain)  # __FILE__ names the directory
    mapped = [cc(d / "m", reproducible.build_environment(1700000000, reproducible.path_maps(d / "m", None, {}), {}))
              for d in (short, long)]
    assert mapped[0] == mapped[1]
    assert b"Nov 14 2023 22:13:20" in mapped[0] and b"/usr/src/vllm/m.c" in mapped[0]


def _record_lines(whl: Path) -> list[list[str]]:
    with zipfile.ZipFile(whl) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        return list(csv.reader(io.StringIO(zf.read(record).decode())))


def test_normalize_wheel_depends_on_content_and_epoch_only(tmp_path: Path) -> None:
    members = {"vllm/_C.abi3.so": b"\x7fELF...", "vllm/__init__.py": b"x = 1\n", "vllm/a/b.py": b"b\n"}
    a = make_wheel(tmp_path / "a", "vllm-cpu", "0.12.0", members)
    b = make_wheel(tmp_path / "b", "vllm-cpu", "0.12.0", dict(reversed(list(members.items()))))
    # b: another order, other times, modes and compression, as another worker's tools might write it.
    with zipfile.ZipFile(b) as zin:
        items = [(i, zin.read(i)) for i in zin.infolist()]
    with zipfile.ZipFile(b, "w") as zout:
        for info, data in reversed(items):
            info.date_time = (2026, 12, 5, 7, 0, 2)
            info.external_attr = 0o100664 << 16
            zout.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    assert not compare(a, b).identical
    epoch = 1763640000  # 2025-11-20 12:00:00 UTC
    for whl in (a, b):
        reproducible.normalize_wheel(whl, epoch)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        infos = zf.infolist()
        assert zf.testzip() is None
    names = [i.filename for i in infos]
    assert names[-1] == "vllm_cpu-0.12.0.dist-info/RECORD"
    assert names[:3] == sorted(members) and all(n.startswith("vllm_cpu-0.12.0.dist-info/") for n in names[3:])
    assert {i.date_time for i in infos} == {(2025, 11, 20, 12, 0, 0)}
    modes = {i.filename: i.external_attr >> 16 for i in infos}
    assert set(modes.values()) == {0o100644}
    # RECORD lists the members in the new order with their true hashes.
    rows = _record_lines(a)
    assert [r[0] for r in rows] == names
    with zipfile.ZipFile(a) as zf:
        for name, digest, size in rows[:-1]:
            data = zf.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={want}", len(data))
    # Without an epoch: the earliest time a zip holds, never the clock.
    reproducible.normalize_wheel(a, None)
    with zipfile.ZipFile(a) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_normalize_wheel_keeps_the_executable_bit(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path, "vllm-cpu", "0.12.0", {"vllm/tool": b"#!/bin/sh\n", "vllm/x.py": b""})
    with zipfile.ZipFile(whl) as zin:
        items = [(i, zin.read(i)) for i in zin.infolist()]
    with zipfile.ZipFile(whl, "w") as zout:
        for info, data in items:
            info.external_attr = (0o100775 if info.filename == "vllm/tool" else 0o100600) << 16
            zout.writestr(info, data)
    reproducible.normalize_wheel(whl, 1763640000)
    with zipfile.ZipFile(whl) as zf:
        assert zf.getinfo("vllm/tool").external_attr >> 16 == 0o100755
        assert zf.getinfo("vllm/x.py").external_attr >> 16 == 0o100644


# --- the fixture upstream built twice ------------------------------------------------


@pytest.fixture
def patched(fixture_repo: Path, tmp_path: Path) -> Path:
    if host_arch() != "x86_64":
        pytest.skip("the fixture is patched for x86_64 here")
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src, symlinks=True)
    patch.patch_tree(src, CATALOG.get("vllm-cpu"), "x86_64", "0.12.0")
    return src


def _commit_time(tree: Path) -> int:
    out = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%ct"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


def test_environment_phase_exports_the_epoch_and_maps_paths_the_record_never_names(
        patched: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "7")  # the tag's time wins over a stray variable
    monkeypatch.setenv("CXXFLAGS", "-DWORKER_OWN=1")
    monkeypatch.setenv("CCACHE_BASEDIR", "/")  # the worker's own: dropped, the tree's set (compile_cache)
    opts = build.BuildOptions(CATALOG.get("vllm-cpu"), patched, tmp_path / "out", fetch_mirror=MIRROR, max_jobs=2)
    need = buildenv.needs(patched, Arch.X86_64, "3.11")
    prep = build._Prepared(Runner(), sys.executable, "3.11", need, {}, provenance.BuildEnvInfo(BuildEnvKind.MANAGED))
    env = build._environment(opts, build._target(opts), prep)
    assert env.full["SOURCE_DATE_EPOCH"] == str(_commit_time(patched)) and env.epoch.origin == "git commit time"
    assert f"-ffile-prefix-map={patched}=/usr/src/vllm" in env.full["CFLAGS"].split()
    assert env.full["CXXFLAGS"].startswith("-DWORKER_OWN=1 -ffile-prefix-map=")
    assert env.full["CCACHE_BASEDIR"] == str(patched)  # the tree's, never the worker's own
    helper = (MIRROR / "isahelper" / "v1.0").resolve()
    assert env.path_maps[str(helper)] == "/usr/src/fetchcontent/isahelper"
    if sys.base_prefix not in ("/usr", "/usr/local"):
        assert env.path_maps[sys.base_prefix] == "/usr/src/python"
    # What the record and the result carry holds no directory of this build.
    assert not any(str(patched) in v for k, v in env.variant_env.items() if not k.startswith("CCACHE_"))
    # An explicit epoch wins over the commit time (an sdist tree has none).
    opts2 = build.BuildOptions(CATALOG.get("vllm-cpu"), patched, tmp_path / "out", fetch_mirror=MIRROR,
                               source_date_epoch=1700000000)
    assert build._environment(opts2, build._target(opts2), prep).full["SOURCE_DATE_EPOCH"] == "1700000000"


def _build_copy(fixture_repo: Path, where: Path, package: str) -> Path:
    src = where / "src"
    shutil.copytree(fixture_repo, src, symlinks=True)
    variant = CATALOG.get(package)
    patch.patch_tree(src, variant, "x86_64", "0.12.0")
    res = build.build(build.BuildOptions(variant, src, where / "dist", log=io.StringIO(), fetch_mirror=MIRROR))
    return Path(res.wheel)


@pytest.mark.slow
@pytest.mark.parametrize("package", VARIANTS)
def test_every_variant_built_in_another_directory_is_the_same_bytes(built_variants, fixture_repo: Path,
                                                                    tmp_path: Path, monkeypatch,
                                                                    package: str) -> None:
    """The session's build and one in a longer directory, the compile cache off: identical wheels."""
    # No stored result: a hit would hide what the compiler does with the path.  The first build
    # had the cache (ccache's tree-relative paths); the rebuild compiles anew, as RebuildWheel does.
    monkeypatch.setenv("CCACHE_RECACHE", "1")
    first = built_variants[package].wheel
    second = _build_copy(fixture_repo, tmp_path / "a-second-and-much-longer-build-directory", package)
    assert first is not None and second.name == first.name
    res = compare(first, second)
    assert res.identical, json.dumps([d.__dict__ for d in res.differences], default=str, indent=1)
    record = provenance.parse(provenance.beside(second).read_text(), "record")
    assert record.source_date_epoch == _commit_time(built_variants[package].src)


# Injected into a test copy of the fixture's kernels: __DATE__/__TIME__ follow SOURCE_DATE_EPOCH;
# __TIMESTAMP__ is the source file's mtime, which no epoch fixes (the deliberate leak).
_LEAK = '''
__attribute__((used)) const char *vllm_fixture_built_on(void) { return "built " __DATE__ " " __TIME__; }
__attribute__((used)) const char *vllm_fixture_source_time(void) { return "source " __TIMESTAMP__; }
'''


@pytest.mark.slow
def test_a_non_deterministic_build_is_caught_with_its_section(fixture_repo: Path, tmp_path: Path,
                                                              monkeypatch) -> None:
    if host_arch() != "x86_64":
        pytest.skip("x86_64 fixture build")
    monkeypatch.setenv("CCACHE_RECACHE", "1")
    wheels = []
    for where, mtime in ((tmp_path / "one", 1_000_000_000), (tmp_path / "two-elsewhere", 1_100_000_000)):
        repo = where / "repo"
        shutil.copytree(fixture_repo, repo, symlinks=True)
        kernels = repo / "csrc" / "cpu" / "isa_kernels.c"
        kernels.write_text(kernels.read_text() + _LEAK)
        os.utime(kernels, (mtime, mtime))
        wheels.append(_build_copy(repo, where, "vllm-cpu"))
    # __DATE__ and __TIME__ are the commit's time in both: the epoch reached the compiler.
    stamp = time.strftime("%b %e %Y %H:%M:%S", time.gmtime(_commit_time(fixture_repo))).encode()
    with zipfile.ZipFile(wheels[0]) as zf:
        module = zf.read("vllm/_C.abi3.so")
    assert b"built " + stamp in module
    res = compare(*wheels)
    assert not res.identical
    by_member = {d.member: d for d in res.differences}
    so = by_member["vllm/_C.abi3.so"]
    assert so.kind is DiffKind.CONTENT and ".rodata" in so.sections and ".text" not in so.sections, so
    assert set(by_member) == {"vllm/_C.abi3.so", "vllm_cpu-0.12.0.dist-info/RECORD"}, by_member
    # As a user runs it.
    out = subprocess.run([sys.executable, "-m", "vllm_cpu_build", "compare", "--json", *map(str, wheels)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert any(d["member"] == "vllm/_C.abi3.so" and ".rodata" in d["sections"] for d in doc["differences"])
