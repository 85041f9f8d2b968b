"""The toolchain on the real vLLM 0.11.2 sdist: build, verify, smoke, as a worker would.

One ``vllm-cpu`` (AVX2) build per session (~4 min on 2 cores with a cold
ccache; ccache under ~/.cache makes a re-run faster).  0.11.2 pins
``torch==2.8.0+cpu`` for x86_64, which no index reachable here offers (the
PyTorch CPU index is not reachable; pip finds only 2.13.0+cpu through its
configured find-links), so what this proves is the refusal path:

* the managed build env cannot get the pinned torch: exit 2 naming it;
* an interpreter holding torch 2.13: exit 2 naming both versions;
* with the test-only ``--torch torch==2.13.0 --allow-torch-mismatch`` the
  build runs; the wheel records the mismatch, ``verify`` fails it (so
  ``upload`` never publishes it) while its ISA audit passes; the platform
  tag is what auditwheel says the binaries need, not the policy's;
* vLLM's module is stripped (31 MB -> < 2 MB); the record beside the wheel
  names the sdist's sha256, the compiler, the torch;
* ``smoke`` shows pip's real reason it cannot install the wheel.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import sdist
from vllm_cpu_build import build, finish, floor, patch, provenance
from vllm_cpu_build.cli import main as cli_main
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.hostcpu import host_arch
from vllm_cpu_build.results import BuildResult
from vllm_cpu_build.variants import load
from vllm_cpu_build.verify import verify_wheel

pytestmark = pytest.mark.slow

VERSION = "0.11.2"
VARIANT = "vllm-cpu"
PIN = "torch==2.8.0+cpu"
# The one CPU torch this machine image has (pip finds it through find-links).
TORCH = "torch==2.13.0"
NO_TORCH_INDEX = ""  # the PyTorch CPU index is unreachable here: pip's own configuration only


@dataclass
class RealBuild:
    sdist: Path
    src: Path
    out: Path
    result: BuildResult
    log: str


@pytest.fixture(scope="session")
def real_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if host_arch() != "x86_64":
        pytest.skip("the real vllm-cpu build runs on x86_64 hosts")
    try:
        archive = sdist.fetch(VERSION, quiet=True)
    except Exception as exc:  # no index reachable
        pytest.skip(f"vLLM {VERSION} sdist unavailable: {exc}")
    src = sdist.extract(VERSION, tmp_path_factory.mktemp("real") / "src")
    patch.patch_tree(src, load().get(VARIANT), "x86_64", VERSION)
    return archive, src


@pytest.fixture(scope="session")
def real_build(real_src: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> RealBuild:
    """The real 0.11.2 vllm-cpu, built once per session against the test-only torch."""
    archive, src = real_src
    out = tmp_path_factory.mktemp("real-dist")
    log = io.StringIO()
    try:
        res = build.build(build.BuildOptions(load().get(VARIANT), src, out, log=log, torch=TORCH,
                                             allow_torch_mismatch=True, torch_index=NO_TORCH_INDEX, sdist=archive,
                                             debug_archive=True))
    except Exception:
        print(log.getvalue()[-20000:])
        raise
    # The typed result carries the wheel's path as a string (JSON); these tests want a Path.
    return RealBuild(archive, src, out, dataclasses.replace(res, wheel=Path(res.wheel)), log.getvalue())


def test_managed_env_refuses_a_torch_it_cannot_get(real_src, tmp_path: Path, capsys) -> None:
    _, src = real_src
    rc = cli_main(["build", "--variant", VARIANT, "--src", str(src), "--out", str(tmp_path), "--json",
                   "--torch-index-url", NO_TORCH_INDEX])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert PIN in err  # the pin it needs, from requirements/cpu.txt for x86_64
    # pip's own words (a pip constraint file turns "Could not find a version" into a conflict).
    assert "Could not find a version that satisfies" in err or "conflict is caused by" in err, err
    assert not list(tmp_path.glob("*.whl"))


def test_the_build(real_build: RealBuild) -> None:
    res = real_build.result
    print(f"real {VERSION} {VARIANT}: {res.wheel.name} {res.wheel.stat().st_size:,} bytes in {res.seconds:.0f} s; "
          f"strip {res.strip.modules}; platform {res.platform}")
    # The build env: upstream's own build requirements, torch replaced by the test-only one.
    env = res.build_env
    assert env["kind"] == "managed"
    assert {"cmake", "ninja", "jinja2", "regex", "setuptools-scm", "torch"} <= {n.lower() for n in env["packages"]}
    assert env["packages"]["torch"].startswith("2.13.0")
    # The pin and the mismatch, recorded and loud in the log.
    assert res.torch == provenance.Torch(PIN, env["packages"]["torch"], False)
    assert f"the wheel will pin {PIN} for x86_64, the build environment has torch 2.13.0" in real_build.log
    # Honest tag: what auditwheel says the binaries need, the policy's only when they meet it.
    needed, _ = finish.needed_tag(res.wheel, "manylinux_2_28", "x86_64")
    assert res.platform.needed == needed
    assert res.platform.tag == finish.platform_tag(needed, "manylinux_2_28", "x86_64")
    assert res.tags == [f"cp38-abi3-{res.platform.tag}"]
    assert res.wheel.name.endswith(f"-cp38-abi3-{res.platform.tag}.whl")
    # Stripped: the module was mostly debug info; the debug archive keeps it.
    mod = res.strip.modules["vllm/_C.abi3.so"]
    assert mod.before > 10 * mod.after, mod
    assert res.wheel.stat().st_size < 6_000_000
    dbg = res.wheel.with_name(res.wheel.name[:-4] + ".debug.tar.gz")
    assert dbg.is_file() and res.strip.debug_archive == dbg.name
    # The record: inside the wheel (as anyone holding it reads it) and beside it, naming the sdist by sha256.
    with zipfile.ZipFile(res.wheel) as zf:
        member = provenance.member_name(zf.namelist())
        inside = provenance.parse(zf.read(member).decode(), member)
    # The same record as the result's, but for the debug archive's name (renamed after the final tags).
    assert dataclasses.replace(inside, strip=res.strip) == res.record and inside.torch == res.torch
    side = json.loads(provenance.beside(res.wheel).read_text())
    assert side["torch"] == {"pin": PIN, "built_against": env["packages"]["torch"], "matches": False}
    assert side["source"]["sdist"] == real_build.sdist.name
    assert side["source"]["sdist_sha256"] == provenance.sha256(real_build.sdist)
    assert side["sha256"] == provenance.sha256(res.wheel)
    assert "GNU" in side["build"]["compiler"]
    assert side["build"]["env"]["VLLM_CPU_DISABLE_AVX512"] == "true"


def test_verify_fails_the_mismatch_but_the_isa_audit_passes(real_build: RealBuild, capsys) -> None:
    res = real_build.result
    v = verify_wheel(res.wheel, VARIANT, "x86_64")
    assert not v.ok
    assert v.check("isa").ok, v.check("isa").detail  # AVX2, no AVX-512/AMX/VNNI
    assert "AVX2" in v.check("isa").detail
    assert v.isa["vllm/_C.abi3.so"].get("AVX2", 0) > 1000
    assert not {f for f, n in v.isa["vllm/_C.abi3.so"].items() if n and f.startswith(("AVX512", "AMX"))}
    prov = v.check("provenance")
    assert not prov.ok and PIN in prov.detail and "2.13.0" in prov.detail
    # The policy is still enforced: a tag newer than manylinux_2_28 fails the manylinux check.
    assert v.check("manylinux").ok is (res.platform.tag == "manylinux_2_28_x86_64")
    for name in ("zip-crc", "record", "metadata", "tags", "twine"):
        assert v.check(name).ok, v.check(name).detail
    # The CLI adds its verdict and the ISA counts per module to the record beside the wheel.
    assert cli_main(["verify", "--variant", VARIANT, "--arch", "x86_64", str(res.wheel)]) == 1
    capsys.readouterr()
    side = json.loads(provenance.beside(res.wheel).read_text())
    assert side["verify"]["ok"] is False and side["verify"]["checks"]["isa"]["ok"] is True
    assert side["verify"]["isa"]["vllm/_C.abi3.so"]["AVX2"] > 1000
    # upload verifies again and publishes nothing.
    rc = cli_main(["upload", "--variant", VARIANT, "--repository-url", "http://127.0.0.1:9/",
                   "--simple-url", "http://127.0.0.1:9/simple/", "--dry-run", str(res.wheel)])
    assert rc == 1
    said = capsys.readouterr()
    assert "nothing uploaded" in said.out + said.err and "provenance" in said.out + said.err


def test_interpreter_with_another_torch_is_refused(real_build: RealBuild, tmp_path: Path, capsys) -> None:
    """A hand-made venv holding torch 2.13 (the one the issue found): exit 2, both versions named."""
    python = real_build.result.python  # the managed env of the mismatch build holds torch 2.13
    rc = cli_main(["build", "--variant", VARIANT, "--src", str(real_build.src), "--out", str(tmp_path),
                   "--build-env", "interpreter", "--python", python])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"the wheel will pin {PIN} for x86_64, the build environment has torch 2.13.0" in err
    assert not list(tmp_path.glob("*.whl"))


def test_smoke_shows_pips_reason(real_build: RealBuild, capsys) -> None:
    """The wheel's real dependencies: torch==2.8.0+cpu is on no index here, and pip says so."""
    wheel = real_build.result.wheel
    rc = cli_main(["smoke", "--variant", VARIANT, str(wheel), "--torch-index-url", NO_TORCH_INDEX, "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and res["status"] == "failed"
    assert "pip install failed" in res["reason"]
    assert "torch==2.8.0+cpu" in res["reason"] and "ERROR:" in res["reason"], res["reason"]
    assert "Could not find a version that satisfies" in res["reason"] or "conflict is caused by" in res["reason"]


def test_stripped_module_keeps_its_code(real_build: RealBuild, tmp_path: Path) -> None:
    """Stripping removes debug sections only: same instructions, and gdb's debuglink points at the archive."""
    import tarfile

    from elftools.elf.elffile import ELFFile

    res = real_build.result
    with zipfile.ZipFile(res.wheel) as zf:
        data = zf.read("vllm/_C.abi3.so")
    (tmp_path / "m.so").write_bytes(data)
    with (tmp_path / "m.so").open("rb") as fh:
        elf = ELFFile(fh)
        names = {s.name for s in elf.iter_sections()}
        assert not {n for n in names if n.startswith(".debug_")}
        assert ".gnu_debuglink" in names and ".text" in names
    with tarfile.open(res.wheel.with_name(res.wheel.name[:-4] + ".debug.tar.gz")) as tar:
        dbg = tar.extractfile("vllm/_C.abi3.so.debug").read()
    assert len(dbg) > 5 * len(data)
    assert shutil.which("objdump") is None or b".debug_info" in dbg


# rms_norm and silu_and_mul of vLLM's own _C against torch's own arithmetic.
_KERNELS = """
import sys, torch
torch.ops.load_library(sys.argv[1])
torch.manual_seed(0)
x, w = torch.randn(8, 256), torch.randn(256)
out = torch.empty_like(x)
torch.ops._C.rms_norm(out, x, w, 1e-6)
assert torch.allclose(out, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w, atol=1e-4, rtol=1e-4)
y, o2 = torch.randn(8, 512), torch.empty(8, 256)
torch.ops._C.silu_and_mul(o2, y)
assert torch.allclose(o2, torch.nn.functional.silu(y[:, :256]) * y[:, 256:], atol=1e-4, rtol=1e-4)
print("kernels ok")
"""


def test_kernels_run_on_the_emulated_floor_cpu(real_build: RealBuild, tmp_path: Path) -> None:
    """The real _C loads and its kernels match torch on the variant's floor CPU (QEMU Haswell-v4).

    Not through ``smoke``: the wheel pins a torch no reachable index has, so it cannot be
    installed; the module runs beside the torch it was compiled against instead.
    """
    cpu = load().get(VARIANT).arches[Arch.X86_64].qemu_floor
    qemu = floor.qemu_binary(Arch.X86_64)
    if qemu is None or cpu is None:
        pytest.skip("no qemu-x86_64 user mode, or no emulated floor")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", TORCH], check=True, timeout=900)
    with zipfile.ZipFile(real_build.result.wheel) as zf:
        [name] = [n for n in zf.namelist() if n.startswith("vllm/_C") and n.endswith(".so")]
        module = Path(zf.extract(name, tmp_path / "wheel"))
    script = tmp_path / "kernels.py"
    script.write_text(_KERNELS)
    emu = floor.Emulator(qemu, cpu, tmp_path / "qemu.log")
    run = subprocess.run(emu.wrap([str(venv / "bin" / "python"), str(script), str(module)]),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "kernels ok" in run.stdout, (run.returncode, run.stderr[-3000:])
