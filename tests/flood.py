"""Floods of anonymous HTTP clients against a master: ``tests/e2e/test_trust_e2e.py`` and ``make bench``.

Three kinds of client, each a thread with one keep-alive HTTP/1.1
connection that asks again as soon as it has its answer:

* ``rest``: REST reads a dashboard makes (builders, the newest builds,
  workers, build requests), in turn;
* ``matrix``: the release matrix as JSON (``master/matrix.py``);
* ``login``: ``/auth/login`` with a wrong password (Basic auth), a guesser.

Every answer's status and time is tallied per kind.  ``probe_rest`` is the
bystander: one fresh ``requests`` call to ``api/v2/builders`` every 0.2 s,
what a person's browser would see during the flood.  Clients connect from
``source`` (another loopback address, e.g. ``127.0.0.2``, is another client
for the login limiter).  Floods only 127.0.0.x: ``Flood`` refuses other
hosts, so a typo cannot turn a test into a load test of a real master.
"""

from __future__ import annotations

import base64
import http.client
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

import requests

from master import matrix

KINDS = ("rest", "matrix", "login")
REST_PATHS = ("api/v2/builders", "api/v2/builds?limit=20&order=-buildid", "api/v2/workers",
              "api/v2/buildrequests?limit=20&order=-buildrequestid")
TARGET = 0.5  # seconds: issue 18's bound for the REST median under a flood


@dataclass
class Tally:
    """What one kind of client got: one latency per answer, the status codes, dropped connections."""

    latencies: list[float] = field(default_factory=list)
    codes: Counter = field(default_factory=Counter)
    dropped: int = 0


def median_p95(values: list[float]) -> tuple[float, float]:
    """(median, 95th percentile) in seconds; (nan, nan) without values."""
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def describe(name: str, values: list[float]) -> str:
    """``name: median 0.012 s, p95 0.034 s, n=150 (target median < 0.5 s: met)``."""
    med, p95 = median_p95(values)
    verdict = "met" if med < TARGET else "MISSED"
    return f"{name}: median {med:.3f} s, p95 {p95:.3f} s, n={len(values)} (target median < {TARGET} s: {verdict})"


class Flood:
    """``rest`` + ``matrix`` + ``login`` client threads against ``web_url`` for ``seconds``; a context manager."""

    def __init__(self, web_url: str, seconds: float, *, rest: int = 0, matrix_readers: int = 0, logins: int = 0,
                 user: str = "admin", source: str = "127.0.0.1") -> None:
        u = urlsplit(web_url)
        if not (u.hostname or "").startswith("127.") or not source.startswith("127."):
            raise ValueError(f"floods are for loopback masters only, not {web_url} from {source}")
        self.host, self.port, self.source = u.hostname or "", u.port or 80, source
        self.base = u.path.rstrip("/")
        self.matrix_path = urlsplit(matrix.json_url(web_url)).path
        self.seconds, self.user = seconds, user
        self.tallies = {k: Tally() for k in KINDS}
        self.stop_at = 0.0
        self._lock = threading.Lock()
        self._threads = ([threading.Thread(target=self._client, args=("rest", i), daemon=True) for i in range(rest)]
                         + [threading.Thread(target=self._client, args=("matrix", i), daemon=True)
                            for i in range(matrix_readers)]
                         + [threading.Thread(target=self._client, args=("login", i), daemon=True)
                            for i in range(logins)])

    @property
    def clients(self) -> int:
        return len(self._threads)

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    def __enter__(self) -> Flood:
        self.stop_at = time.monotonic() + self.seconds
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_at = min(self.stop_at, time.monotonic())  # an exception in the body ends the flood too
        for t in self._threads:
            t.join(120)

    def _request(self, kind: str, i: int, n: int) -> tuple[str, dict[str, str]]:
        if kind == "rest":
            return f"{self.base}/{REST_PATHS[n % len(REST_PATHS)]}", {}
        if kind == "matrix":
            return self.matrix_path, {}
        token = base64.b64encode(f"{self.user}:wrong-{i}-{n}".encode()).decode()
        return f"{self.base}/auth/login", {"Authorization": f"Basic {token}"}

    def _client(self, kind: str, i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while self.running():
            n += 1
            path, headers = self._request(kind, i, n)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=60, source_address=(self.source, 0))
            t0 = time.monotonic()
            try:
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):  # the server closed it (after a 429, say): reconnect
                conn.close()
                conn = None
                with self._lock:
                    self.tallies[kind].dropped += 1
                continue
            with self._lock:
                self.tallies[kind].latencies.append(time.monotonic() - t0)
                self.tallies[kind].codes[r.status] += 1
        if conn is not None:
            conn.close()

    def report(self) -> list[str]:
        """One line per kind that ran: status codes and latency."""
        out = []
        for kind, t in self.tallies.items():
            if t.latencies or t.dropped:
                med, p95 = median_p95(t.latencies)
                out.append(f"{kind:6} clients: {dict(sorted(t.codes.items()))}, {t.dropped} dropped; "
                           f"median {med:.3f} s, p95 {p95:.3f} s")
        return out


def probe_rest(web_url: str, until: Callable[[], bool], interval: float = 0.2,
               between: Callable[[], None] | None = None) -> list[float]:
    """Seconds per ``GET api/v2/builders`` (a fresh connection each) while ``until()`` is true; each must be 200.
    ``between`` runs after each probe (e.g. a login that must work during a flood)."""
    out: list[float] = []
    while until():
        t0 = time.monotonic()
        r = requests.get(web_url + "api/v2/builders", timeout=60)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        out.append(time.monotonic() - t0)
        if between is not None:
            between()
        time.sleep(interval)
    return out
