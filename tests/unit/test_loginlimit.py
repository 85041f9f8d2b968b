"""``master.loginlimit.FailureLimiter`` and the release matrix's cache (``MatrixApp.current``)."""

from __future__ import annotations

import threading
import time

from master.loginlimit import FailureLimiter
from master.matrix_app import MatrixApp
from vllm_cpu_build.variants import load


def test_failures_per_client_then_refused_for_the_window() -> None:
    now = [1000.0]
    lim = FailureLimiter(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):  # three attempts start before any ends: the fourth is refused all the same
        assert lim.begin("10.0.0.1") == 0
    assert lim.begin("10.0.0.1") == 60  # refused for the window (and not counted)
    for _ in range(3):
        lim.record("10.0.0.1", failed=True)
    assert lim.retry_after("10.0.0.2") == 0  # another client is not
    now[0] += 30
    assert lim.retry_after("10.0.0.1") == 30
    now[0] += 31
    assert lim.retry_after("10.0.0.1") == 0  # the failures aged out
    lim.begin("10.0.0.2")
    lim.record("10.0.0.2", failed=False)  # a good login clears its client's count
    assert lim._failures == {}


class CountingApp(MatrixApp):
    def __init__(self, interval: float) -> None:
        super().__init__(load(), "http://idx/simple/", "http://bb/", lambda u, p: [], interval=interval)
        self._watching = True  # no master here: events are sent by hand

    def matrix(self):  # type: ignore[override]
        time.sleep(0.05)  # long enough for concurrent requests to overlap
        return object()


def test_matrix_is_computed_once_per_interval_and_after_a_finished_build() -> None:
    app = CountingApp(interval=60)
    threads = [threading.Thread(target=app.current) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert app.computed == 1  # eight concurrent requests, one computation
    first = app.current()
    assert app.current() is first and app.computed == 1
    app._build_finished(("builds", "1", "finished"), {})
    assert app.current() is not first and app.computed == 2
    app.interval = 0
    app.current()
    assert app.computed == 3
