"""``master.restfix``: Buildbot's REST JSON is written on the reactor thread, never from a worker thread.

Root cause of ``ContentDecodingError: ... gzip, but failed to decode it``
seen by REST clients of a busy master: Buildbot 4.3 calls ``request.write``
from ``deferToThread``.  A real Twisted server (``tests/rest_probe.py``)
answering like Buildbot's ``renderRest`` counts writes made off the reactor
thread: Buildbot's own writer makes them on every answer, the fixed one none,
and concurrent gzip clients decode every answer.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from master import restfix

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe(tmp_path: Path):
    procs = []

    def start(mode: str) -> str:
        port_file = tmp_path / f"port-{mode}"
        proc = subprocess.Popen([sys.executable, "-m", "tests.rest_probe", mode, str(port_file)], cwd=REPO)
        procs.append(proc)
        deadline = time.monotonic() + 120  # a cold import of buildbot on a busy machine
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None, f"rest_probe exited {proc.returncode}"
            assert time.monotonic() < deadline, "rest_probe did not start"
            time.sleep(0.1)
        return f"http://127.0.0.1:{port_file.read_text()}/"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def hammer(url: str, threads: int = 6, per_thread: int = 15) -> list[str]:
    """Concurrent gzip GETs (requests asks for gzip by default); the errors seen."""
    errors: list[str] = []

    def loop() -> None:
        with requests.Session() as s:
            for _ in range(per_thread):
                try:
                    r = s.get(url + "api", timeout=60)
                    assert r.headers.get("content-encoding") == "gzip"
                    assert len(r.json()["builds"]) == 40
                except Exception as exc:  # noqa: BLE001 - counted, reported below
                    errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def stats(url: str) -> dict:
    return requests.get(url + "stats", timeout=60).json()


def test_buildbot_writes_rest_answers_off_the_reactor(probe) -> None:
    url = probe("original")
    hammer(url, threads=2, per_thread=3)  # whether one fails to decode is a rare race; the writes are not
    counts = stats(url)
    assert counts["writes"] > 0 and counts["off_reactor_writes"] > 0, counts


def test_fixed_writer_writes_on_the_reactor_and_every_answer_decodes(probe) -> None:
    url = probe("fixed")
    assert hammer(url) == []
    counts = stats(url)
    assert counts["writes"] >= 6 * 15 and counts["off_reactor_writes"] == 0, counts


def test_install_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    from buildbot.www.rest import V2RootResource

    # Whatever writer is there now (make_www installs the fix in other tests): monkeypatch
    # puts it back after this test.
    monkeypatch.setattr(V2RootResource, "_write_json_data", staticmethod(lambda request, encoder, data: None))
    assert not restfix.installed()
    restfix.install()
    restfix.install()
    assert restfix.installed()
