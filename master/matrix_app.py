"""The release matrix's WSGI app (``www["plugins"]["wsgi_dashboards"]``), computed at most once per interval.

``master/matrix.py`` computes and renders the matrix; this serves it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.logger import Logger, LogLevel

from master.matrix import JSON_FILE, Matrix, collect, compute, json_url, to_html, to_json
from master.matrix_next import collect_next, next_rows
from steps import custody
from vllm_cpu_build.index import IndexFile
from vllm_cpu_build.variants import Catalog

_log = Logger()


class MatrixApp:
    """WSGI app for ``www["plugins"]["wsgi_dashboards"]``; Buildbot sets ``buildbot_api`` (has ``master``).

    Runs in Buildbot's WSGI thread pool: the data API is read on the reactor
    (``blockingCallFromThread``), the index over HTTP from this thread.  The
    matrix is computed at most once per ``interval`` seconds, and again once a
    build has finished: measured, 24 clients asking for it made every request
    re-read the index (REST answers went from 0.01 s to 4 s).  Concurrent
    requests wait for the one computation under way (``computed`` counts them).
    """

    def __init__(self, catalog: Catalog, simple_url: str, web_url: str,
                 list_files: Callable[[str, str], list[IndexFile]], interval: float = 10.0,
                 readiness_builders: tuple[str, ...] = ()) -> None:
        self.catalog = catalog
        self.readiness_builders = readiness_builders  # their newest builds are the "next" rows
        self.simple_url = simple_url
        self.web_url = web_url
        self.list_files = list_files
        self.interval = interval
        self.buildbot_api: Any = None
        self.computed = 0
        self._lock = threading.Lock()
        self._cached: tuple[float, int, Matrix] | None = None  # (monotonic time, generation, matrix)
        self._generation = 0  # bumped by every finished build
        self._watching = False

    def _build_finished(self, key: Any, msg: Any) -> None:
        self._generation += 1

    def _watch(self) -> None:
        """On the reactor, once: a finished build makes the cached matrix stale."""
        if not self._watching:
            self._watching = True
            self.buildbot_api.master.mq.startConsuming(self._build_finished, ("builds", None, "finished"))

    def current(self) -> Matrix:
        """The cached matrix, or a fresh one when it is older than ``interval`` or a build finished since."""
        from twisted.internet import reactor, threads

        with self._lock:
            if not self._watching:
                threads.blockingCallFromThread(reactor, self._watch)
            generation = self._generation
            cached = self._cached
            if cached and time.monotonic() - cached[0] < self.interval and cached[1] == generation:
                return cached[2]
            m = self.matrix()
            self.computed += 1
            self._cached = (time.monotonic(), generation, m)
            return m

    def matrix(self) -> Matrix:
        from twisted.internet import reactor, threads

        master = self.buildbot_api.master
        snapshot: dict[str, Any] = threads.blockingCallFromThread(reactor, collect, master)
        ready = threads.blockingCallFromThread(reactor, collect_next, master, self.readiness_builders)
        listed: dict[str, list[IndexFile]] = {}
        index: dict[str, list[IndexFile]] | None = listed
        error = ""
        try:
            for v in self.catalog.variants:
                listed[v.package] = self.list_files(self.simple_url, v.package)
        except Exception as exc:  # the page must still show the builds
            index, error = None, f"{type(exc).__name__}: {exc}"[:300]
        held = custody.blocking(master)([f.filename for files in listed.values() for f in files]) if index else {}
        m = compute(self.catalog, snapshot, index, web_url=self.web_url, index_url=self.simple_url,
                    custody=held, index_error=error)
        return replace(m, next_rows=next_rows(ready, m.columns, self.web_url))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path not in ("/", "/index.html", f"/{JSON_FILE}"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"no such page; try index.html or {JSON_FILE}\n".encode()]
        try:
            m = self.current()
        except Exception as exc:
            _log.failure("vllm-cpu: release matrix", level=LogLevel.error)
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"the release matrix failed: {type(exc).__name__}: {exc}\n".encode()]
        if path == f"/{JSON_FILE}":
            body = json.dumps(to_json(m), indent=1).encode()
            ctype = "application/json"
        else:
            body = to_html(m, json_url(self.web_url)).encode()
            ctype = "text/html; charset=utf-8"
        start_response("200 OK", [("Content-Type", ctype), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [body]
