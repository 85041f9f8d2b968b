"""End to end: after "serving", ``make run`` prints releases, build results and workers coming and going.

A sandbox of its own (a tag that does not compile must be in its upstream
before the master starts, so that only a force builds it), watched by
``sandbox.watch.follow`` in a thread exactly as ``make run`` runs it after
"serving"; the test reads the lines it printed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, watch
from tests.notify_servers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VARIANT, BROKEN_VERSION = "vllm-cpu", "0.11.3"
BROKEN_SOURCE = "csrc/cpu/isa_kernels.c"
WORKER = "local-x86-2"


class BrokenTagSandbox(Sandbox):
    def write_settings(self) -> None:
        from testbed.fixture_upstream.make_repo import add_release

        src = self.upstream / BROKEN_SOURCE
        add_release(self.upstream, f"v{BROKEN_VERSION}",
                    files={BROKEN_SOURCE: src.read_text() + "\n#error fixture release that does not compile\n"})
        super().write_settings()


class Console:
    """``follow`` in a thread, its lines collected as ``make run`` would print them."""

    def __init__(self, sb: Sandbox) -> None:
        self.lines: list[str] = []
        self.done = threading.Event()
        watcher = watch.Watcher(sb)
        watcher.baseline()
        self.thread = threading.Thread(target=watch.follow, args=(sb, self.lines.append, self.done.is_set, 0.5,
                                                                  watcher), daemon=True)
        self.thread.start()

    def wait(self, pattern: str, timeout: float = 120) -> str:
        rx = re.compile(pattern)
        try:
            return str(wait_for(lambda: next((line for line in self.lines if rx.search(line)), None), timeout,
                                f"a console line matching {pattern!r}"))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; the console said: {self.lines}") from None

    def close(self) -> None:
        self.done.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Console]]:
    sb = BrokenTagSandbox(Path(tmp_path_factory.mktemp("watch-sandbox")), web_port=0, worker_port=0, index_port=0,
                          poll_interval=1, quiet=True)
    console = None
    try:
        sb.start()
        console = Console(sb)
        yield sb, console
    finally:
        if console is not None:
            console.close()
        sb.stop()


def test_a_release_and_its_failed_build_are_printed_with_the_first_error_line(watched) -> None:
    sb, console = watched
    time.sleep(1.5)  # a few quiet polls: the baseline (workers, earlier builds) is not news
    assert console.lines == [], console.lines
    r = sb.force(versions=BROKEN_VERSION, variants=[VARIANT], arches=["x86_64"], dry_run=True,
                 python_versions="auto", postfix="", reason="watch e2e")
    assert r.status_code == 200, r.text
    started = console.wait(rf"^release #\d+ of {BROKEN_VERSION} started \(tag v{BROKEN_VERSION}, dry run\)$")
    failed = console.wait(rf"^{VARIANT}-x86_64 #\d+ of {BROKEN_VERSION} finished: failure: ", 600)
    assert re.search(rf"finished: failure: build: build failed \(exit 1\): {BROKEN_SOURCE}:\d+:\d+: error: "
                     "#error fixture release that does not compile$", failed), failed
    finished = console.wait(rf"^release #\d+ of {BROKEN_VERSION} finished: failure", 300)
    number = started.split()[1]
    assert finished.startswith(f"release {number} of {BROKEN_VERSION} finished: failure"), (started, finished)
    # One line per event, in order: no repeats of the same build.
    assert console.lines.index(started) < console.lines.index(failed) < console.lines.index(finished)
    assert len([line for line in console.lines if line == failed]) == 1


def test_a_worker_leaving_and_coming_back_is_printed(watched) -> None:
    sb, console = watched
    assert sb.procs.stop(f"worker {WORKER}")
    gone = console.wait(rf"^worker {WORKER} disconnected$")
    sb.start_worker(WORKER)
    back = console.wait(rf"^worker {WORKER} connected$")
    assert console.lines.index(gone) < console.lines.index(back)
    assert not [line for line in console.lines if "local-x86-1" in line], console.lines
