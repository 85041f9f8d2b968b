"""``[build] reproduce = true`` end to end: every wheel is built twice, by two workers, before upload.

Real processes: pypiserver, a Buildbot master, the two x86_64 buildbot-worker
processes of the registry, the fixture upstream.  A forced release of
``vllm-cpu`` x86_64 builds its wheel on one worker and again on the other
(the ``reproduce-x86_64`` builder), the master compares the bytes and only
then uploads; the provenance and the build summary carry the rebuild's
sha256.  Then the fixture is made non-deterministic (``FIXTURE_NOISE_FILE``:
a random number compiled into ``_C``): the release uploads nothing and
names the member and the ELF section that differ.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from farm.names import builder_name, reproduce_builder
from farm.report import flatten
from sandbox import Sandbox
from vllm_cpu_build.index import list_index_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VARIANT, ARCH = "vllm-cpu", "x86_64"


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("reproduce")
    s = Sandbox(root / "sb", tags=["v0.11.2", "v0.12.0"], web_port=0, worker_port=0, index_port=0,
                poll_interval=1, quiet=True, reproduce=True, worker_env={"FIXTURE_NOISE_FILE": str(root / "noise")})
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _release(sb: Sandbox, version: str) -> dict[str, Any]:
    """Force a release of ``version`` for vllm-cpu x86_64 and wait for it; its variant and reproduce builds."""
    before = max([b["buildid"] for b in sb.release_builds()] or [0])
    r = sb.force(versions=version, variants=[VARIANT], arches=[ARCH], reason="reproduce e2e")
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    done = sb.wait_release(version, after=before, timeout=900)
    print(f"\n{version}: release with rebuild done in {time.monotonic() - t0:.1f}s")
    names = sb.builders()
    builds, _ = sb.children(done["release"]["buildid"])
    [variant] = [b for b in builds if names[b["builderid"]] == builder_name(VARIANT, ARCH)]
    variant = sb.api(f"builds/{variant['buildid']}", property="*")[0]
    rebuilds = [b for b in sb.api(f"builders/{sb.builder_id(reproduce_builder(ARCH))}/builds", property="*")
                if (flatten(b["properties"]).get("reproduce_of") or {}).get("number") == variant["number"]]
    assert len(rebuilds) == 1, rebuilds
    return {**done, "variant": variant, "rebuild": rebuilds[0]}


def _worker(sb: Sandbox, build: dict[str, Any]) -> str:
    return str(sb.api(f"workers/{build['workerid']}")[0]["name"])


def _steps(sb: Sandbox, build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in sb.api(f"builds/{build['buildid']}/steps")}


def test_the_other_worker_rebuilds_the_same_bytes_before_upload(sb: Sandbox) -> None:
    done = _release(sb, "0.12.0")
    [row] = done["rows"]
    assert row["result"] in ("success", "warnings") and row["uploaded"] == "yes", row
    variant, again = done["variant"], done["rebuild"]
    first_worker, other = _worker(sb, variant), _worker(sb, again)
    assert {first_worker, other} == {"local-x86-1", "local-x86-2"}  # the rebuild ran on the other worker
    vp, rp = flatten(variant["properties"]), flatten(again["properties"])
    assert vp["builddir"] != rp["builddir"]  # a fresh directory under another builder
    [(wheel, sha)] = vp["built"].items()
    assert rp["reproduced"][wheel]["identical"] and rp["reproduced"][wheel]["sha256"] == {"a": sha, "b": sha}
    assert rp["built"] == {wheel: sha}  # what the rebuild's own build step recorded
    # The rebuild came before the upload, and the uploaded bytes are the ones both builds made.
    steps = _steps(sb, variant)
    order = list(steps)
    assert order.index("smoke_cp38-abi3") < order.index("fetch_wheels") < order.index("reproduce") \
        < order.index("upload")
    assert steps["reproduce"]["results"] == 0 and sha in steps["reproduce"]["state_string"]
    assert [f.sha256 for f in list_index_files(sb.simple_url, VARIANT) if f.filename == wheel] == [sha]
    prov = vp["provenance"][wheel]
    assert (prov["rebuild_sha256"], prov["rebuild_worker"]) == (sha, other)
    assert f"[reproduced on {other}: same sha256]" in variant["state_string"]
    assert "[same bytes]" in again["state_string"]
    # The rebuild's compile had ccache off and ran no verify/smoke of its own.
    assert not [n for n in _steps(sb, again) if n.startswith(("verify_", "smoke_"))]
    assert not (sb.master_dir / "custody" / reproduce_builder(ARCH)).exists()  # its custody is gone


def test_a_build_that_is_not_reproducible_publishes_nothing_and_says_what_differs(sb: Sandbox) -> None:
    noise = Path(sb.worker_env["FIXTURE_NOISE_FILE"])
    noise.touch()
    try:
        done = _release(sb, "0.11.2")
    finally:
        noise.unlink()
    [row] = done["rows"]
    assert row["result"] == "failure" and row["uploaded"] == "no", row
    assert not [f for f in list_index_files(sb.simple_url, VARIANT) if "-0.11.2-" in f.filename]
    variant, again = done["variant"], done["rebuild"]
    steps = _steps(sb, variant)
    assert "upload" not in steps or steps["upload"]["results"] is None or steps["upload"]["results"] == 3
    [(wheel, sha)] = flatten(variant["properties"])["built"].items()
    text = steps["reproduce"]["state_string"]
    assert steps["reproduce"]["results"] == 2 and "NOT reproducible, nothing published" in text, text
    assert wheel in text and f"built sha256 {sha}" in text, text
    # The master's compare names the module and the ELF section the random number went into.
    assert "differs: " in text and "vllm/_C.abi3.so (" in text and ".rodata" in text, text
    assert "NOT reproducible, nothing published" in variant["state_string"], variant["state_string"]
    outcome = flatten(again["properties"])["reproduced"][wheel]
    assert not outcome["identical"] and outcome["sha256"]["a"] == sha and outcome["sha256"]["b"] != sha
    logs = sb.build_logs(again["buildid"])
    print(logs["compare/compare"])
    assert wheel in logs["compare/compare"] and '"kind": "compare"' in logs["compare/compare"]
    # Nothing of the first build is left on the master.
    assert not (sb.master_dir / "custody" / builder_name(VARIANT, ARCH) / str(variant["number"])).exists()
