"""Replayed webhooks, through the real endpoint of a real master: one delivery makes one change.

A sandbox of its own whose tag poller looks only every 60 s, so the signed
webhook is how the tag arrives.  The tag's wheels are already this farm's
(in the index and adopted into the custody ledger): its release builds
nothing, the test measures only what the webhook starts.

* the same signed delivery (one ``X-GitHub-Delivery``), stuffed with
  properties, posted N times, 8 at a time: one change (without properties),
  one release; every other post answers 200 "ignored: delivery ... seen
  before" (the poller's own change for the tag is not counted);
* new delivery ids for the same tag while its release runs or once it is
  done: "ignored: the release of ... is queued or running / done", no change.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from farm.report import flatten
from sandbox import Sandbox
from tests.e2e.services import adopt, make_wheel
from vllm_cpu_build.variants import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

VERSION = "0.12.1"
REPLAYS = 200


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory):
    s = Sandbox(tmp_path_factory.mktemp("replay") / "sb", web_port=0, worker_port=0, index_port=0,
                poll_interval=60, quiet=True)
    try:
        s.start()
        adopt(s.master_dir / "state.sqlite", s.simple_url,
              *[make_wheel(s.root / "index", v.dist_name, VERSION, f"cp38-abi3-manylinux_2_28_{arch}")
                for v in load().for_release(VERSION) for arch in v.arches])
        yield s
    finally:
        s.stop()


def webhook_changes(sb: Sandbox) -> list[dict]:
    return [c for c in sb.api("changes") if c["branch"] == f"v{VERSION}"]


def releases(sb: Sandbox, branch: str | None = f"v{VERSION}") -> list[dict]:
    """Release builds of VERSION the webhook's change started (``branch`` None: also the poller's)."""
    return [b for b in sb.release_builds() if flatten(b.get("properties")).get("version") == VERSION
            and (branch is None or flatten(b.get("properties")).get("branch") == branch)]


def test_one_delivery_replayed_makes_one_change(sb: Sandbox) -> None:
    sb.push_tag(f"v{VERSION}")
    payload = sb.tag_push(f"v{VERSION}", properties={"dry_run": True, "python_versions": "/tmp/x"}, dry_run=True)
    delivery = str(uuid.uuid4())
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: sb.webhook(payload, headers={"X-GitHub-Delivery": delivery}),
                                range(REPLAYS)))
    seconds = time.monotonic() - t0
    print(f"\n{REPLAYS} posts of one delivery: {seconds:.1f}s")
    assert all(r.status_code == 200 for r in answers), {r.status_code for r in answers}
    made = [r for r in answers if "1 change found" in r.text]
    ignored = [r for r in answers if f"ignored: delivery {delivery} was seen before (tag v{VERSION})" in r.text]
    assert len(made) == 1 and len(ignored) == REPLAYS - 1, [r.text for r in answers if r not in ignored][:3]
    (change,) = webhook_changes(sb)
    assert (change["category"], change["properties"]) == ("tag", {}), change
    sb.until(lambda: any(b["complete"] for b in releases(sb)), 300, "the tag's release")
    assert len(releases(sb)) == 1


def test_new_deliveries_for_a_released_tag_start_nothing(sb: Sandbox) -> None:
    # The poller sees the tag too (every 60 s here): its own change and release, let them settle first.
    sb.until(lambda: any(c["branch"] == f"refs/tags/v{VERSION}" for c in sb.api("changes")), 180,
             "the poller's change")
    sb.until(lambda: len(releases(sb, None)) >= 2 and all(b["complete"] for b in releases(sb, None)), 300,
             "the tag's releases")
    before_requests, before_changes = sb.buildrequests_total(), len(sb.api("changes"))
    for _ in range(5):
        r = sb.webhook(sb.tag_push(f"v{VERSION}"), headers={"X-GitHub-Delivery": str(uuid.uuid4())})
        assert r.status_code == 200 and f"ignored: the release of {VERSION} is done" in r.text, r.text
        assert "no change found" in r.text
        assert "re-check" in r.text
    assert sb.buildrequests_total() == before_requests and len(sb.api("changes")) == before_changes
    assert len(webhook_changes(sb)) == 1 and len(releases(sb)) == 1
