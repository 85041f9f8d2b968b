"""What happens on the master after ``make run`` says "serving": one line per event.

``Watcher`` polls the master's REST API (``sandbox.http.Client``) and turns
what changed since its last look into lines:

* ``release #7 of 0.12.1 started (tag v0.12.1)``: a release (or re-check,
  or images) build began;
* ``vllm-cpu-x86_64 #12 of 0.12.1: failure: build failed (exit 1):
  csrc/x.c:3:2: error: ...``: a build finished; a failed one says which
  step failed with that step's summary, whose text is the first error line
  of its log (``steps/toolchain.py``);
* ``release #7 of 0.12.1 finished: failure: 4 of 5 variant builds ok, ...``;
* ``worker local-x86-2 disconnected`` / ``worker arm64-1 connected``.

What exists when the watcher starts is its baseline, not news: builds that
are running then are reported when they finish.  ``follow`` is the loop of
``make run``; the e2e test drives ``poll`` against a real master.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import requests

from farm import report
from farm.names import IMAGES, RECHECK, RELEASE
from sandbox.http import Client, Json

# Builders whose start is news (a release, a re-check, an images build); variant builds say when they end.
ANNOUNCED = (RELEASE, RECHECK, IMAGES)
FAILED = frozenset({2, 4})  # Buildbot's FAILURE, EXCEPTION (a step's or a build's results)
INTERVAL = 2.0  # seconds between two looks
_RESULT_SUFFIX = re.compile(r" \((?:failure|exception|warnings|cancelled|skipped|retry)\)$")


class Watcher:
    """Lines for what changed on the master at ``client`` since the last ``poll`` (the first sets the baseline)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.builders: dict[int, str] = {}
        self.workers: set[str] | None = None  # None until the baseline
        self.newest = 0  # the highest buildid seen
        self.running: set[int] = set()  # builds seen unfinished: their end is news

    def baseline(self) -> None:
        """What is there now is not news; what is running now is reported when it ends."""
        self.workers = self._connected()
        builds = self.client.api("builds", order="-buildid", limit=200)
        self.newest = max([b["buildid"] for b in builds] or [0])
        self.running = {b["buildid"] for b in builds if not b["complete"]}

    def poll(self) -> list[str]:
        """One line per event since the last call, oldest first."""
        if self.workers is None:
            self.baseline()
            return []
        return self._worker_lines() + self._build_lines()

    # ------------------------------------------------------------- workers
    def _connected(self) -> set[str]:
        return {w["name"] for w in self.client.api("workers") if w.get("connected_to")}

    def _worker_lines(self) -> list[str]:
        now = self._connected()
        before = self.workers or set()
        self.workers = now
        return ([f"worker {name} connected" for name in sorted(now - before)]
                + [f"worker {name} disconnected" for name in sorted(before - now)])

    # ------------------------------------------------------------- builds
    def _builder(self, builderid: int) -> str:
        if builderid not in self.builders:
            self.builders = self.client.builders()
        return self.builders.get(builderid, f"builder {builderid}")

    def _build_lines(self) -> list[str]:
        """Starts and ends since the last look, in the order they happened (a release ends after its builds)."""
        low = min(self.running | {self.newest + 1}) - 1
        builds = self.client.api("builds", buildid__gt=low, order="buildid", property="*")
        # (time, rank, buildid, line); the REST API's times are whole seconds, so within one second a
        # start comes first and a release (which waits for its builds) ends after them.
        events: list[tuple[float, int, int, str]] = []
        for b in builds:
            bid = b["buildid"]
            new = bid > self.newest
            self.newest = max(self.newest, bid)
            announced = self._builder(b["builderid"]) in ANNOUNCED
            if new and announced:
                events.append((b.get("started_at") or 0, 0, bid, f"{self._name(b)} started{self._why(b)}"))
            if b["complete"] and (new or bid in self.running):
                self.running.discard(bid)
                events.append((b.get("complete_at") or b.get("started_at") or 0, 2 if announced else 1, bid,
                               self._finished(b)))
            elif not b["complete"]:
                self.running.add(bid)
        return [e[3] for e in sorted(events)]

    def _name(self, b: Json) -> str:
        version = report.flatten(b.get("properties")).get("version")
        return f"{self._builder(b['builderid'])} #{b['number']}" + (f" of {version}" if version else "")

    @staticmethod
    def _why(b: Json) -> str:
        props = report.flatten(b.get("properties"))
        parts = ([f"tag {props['tag']}"] if props.get("tag") else []) + (["dry run"] if props.get("dry_run") else [])
        return f" ({', '.join(parts)})" if parts else ""

    def _finished(self, b: Json) -> str:
        line = f"{self._name(b)} finished: {report.result_name(b)}"
        if b.get("results") in FAILED:
            step = self._failed_step(b["buildid"])
            if step:
                return f"{line}: {step}"
        summary = (b.get("state_string") or "").strip()
        return f"{line}: {summary}" if summary else line

    def _failed_step(self, buildid: int) -> str:
        """``<step>: <its summary>`` of the first failed step: the first error line of its log."""
        for st in self.client.api(f"builds/{buildid}/steps", order="number"):
            if st.get("results") in FAILED:
                return f"{st['name']}: {first_line(st.get('state_string') or '')}"
        return ""


def first_line(text: str) -> str:
    """The first line of a step summary, without Buildbot's `` (failure)`` suffix (the line says it)."""
    line = (text.strip().splitlines() or [""])[0]
    return _RESULT_SUFFIX.sub("", line)


def follow(client: Client, log: Callable[[str], None], stop: Callable[[], bool] = lambda: False,
           interval: float = INTERVAL, watcher: Watcher | None = None) -> None:
    """Log every event until ``stop()`` (``watcher``: one whose baseline is taken); a master that does
    not answer for a while is said once."""
    watcher = watcher or Watcher(client)
    silent = False
    while not stop():
        try:
            lines = watcher.poll()
        except requests.RequestException as exc:
            if not silent:
                log(f"the master does not answer ({type(exc).__name__}); still watching")
            silent = True
        else:
            if silent:
                log("the master answers again")
            silent = False
            for line in lines:
                log(line)
        time.sleep(interval)
