"""Logins that cannot slow the master down: failures limited per client, hashing in its own threads.

Measured: 24 anonymous clients guessing passwords pushed REST answers
from 0.01 s to 3.45 s: every guess ran argon2 (tens of ms of CPU, by
design) on the reactor's thread pool, which Buildbot also uses to encode
REST answers, with no delay or limit (1.8-3.3 guesses/s from one client).

``FailureLimiter``: after ``limit`` failed logins from one address within
``window`` seconds, that address gets HTTP 429 (``Retry-After``) without
any hashing until the window has passed; a successful login clears it.
``hash_pool()``: argon2 runs in two threads of its own, so a flood waits
for them while REST, the webhook and the UI keep the reactor's pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.web._auth.wrapper import HTTPAuthSessionWrapper

_pool: ThreadPool | None = None
_pool_lock = threading.Lock()


def hash_pool() -> ThreadPool:
    """The argon2 threads (2, started on first use, stopped with the reactor)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPool(minthreads=1, maxthreads=2, name="vllm-cpu-argon2")
            _pool.start()
            reactor.addSystemEventTrigger("during", "shutdown", _pool.stop)  # type: ignore[attr-defined]
        return _pool


class FailureLimiter:
    """Failed logins per client address: ``limit`` within ``window`` seconds, then refused for the window."""

    def __init__(self, limit: int = 10, window: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            return self._wait(client, self.clock())

    def _wait(self, client: str, now: float) -> float:
        recent = [t for t in self._failures.get(client, []) if now - t < self.window]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return self.window - (now - recent[0]) if len(recent) >= self.limit else 0.0

    def begin(self, client: str) -> float:
        """A login attempt starts: 0 and counted as a failure until ``record`` says otherwise (so
        concurrent attempts cannot get past the limit), or the seconds to wait (not counted)."""
        with self._lock:
            now = self.clock()
            wait = self._wait(client, now)
            if not wait:
                self._failures.setdefault(client, []).append(now)
                if len(self._failures) > 10_000:  # bounded memory under a flood from many addresses
                    self._failures.pop(next(iter(self._failures)))
            return wait

    def record(self, client: str, failed: bool) -> None:
        """The attempt's outcome: a success clears the client's failures."""
        if not failed:
            with self._lock:
                self._failures.pop(client, None)


class LimitedLogin(HTTPAuthSessionWrapper):
    """``/auth/login``: refused with 429 while the client is over its failures; otherwise Buildbot's."""

    def __init__(self, portal: Any, credential_factories: list[Any], limiter: FailureLimiter) -> None:
        super().__init__(portal, credential_factories)
        self.limiter = limiter

    def render(self, request: Any) -> Any:
        client = str(getattr(request.getClientAddress(), "host", "unknown"))
        wait = self.limiter.begin(client)
        if wait:
            request.setResponseCode(429)
            request.setHeader(b"retry-after", str(int(wait) + 1).encode())
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return (f"too many failed logins from {client}: try again in {int(wait) + 1} s\n").encode()
        request.notifyFinish().addBoth(lambda _: self.limiter.record(client, request.code == 401))
        return super().render(request)
