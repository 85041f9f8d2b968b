"""HTTP reads of the sandbox and the e2e tests that survive a transient failure.

A busy 2-core machine makes the master or the index slow, drop a connection
or (Buildbot 4.3, see ``master/restfix.py``) send a broken gzip body.  Every
polling loop reads through ``get``/``get_json``: a connection error, a
timeout, a body that fails to decode, a 502/503/504 or truncated JSON is
retried with backoff; anything else (a 4xx, the last failure) is the
caller's.  Only idempotent GETs are retried; a POST (force, change hook) is
sent once.
"""

from __future__ import annotations

import time
from typing import Any

import requests

ATTEMPTS = 6  # 0.5 + 1 + 2 + 4 + 8 s of backoff: a master busy for ~15 s is not a failure
BACKOFF = 0.5
TIMEOUT = 60  # seconds per request: a loaded master answers slowly, it is not down
RETRY_STATUS = frozenset({502, 503, 504})
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class TransientHTTPError(requests.RequestException):
    """A 502/503/504 answer where JSON was expected (retried like a dropped connection)."""


def _pause(attempt: int, backoff: float) -> None:
    time.sleep(backoff * 2 ** attempt)


def get(session: requests.Session | None, url: str, *, params: Any = None, timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS, backoff: float = BACKOFF, **kwargs: Any) -> requests.Response:
    """``session.get`` (or ``requests.get``) retried on transient failures; the body is already read.

    After the last attempt a 502/503/504 is returned as it is and an
    exception is raised.
    """
    http = session or requests
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            r = http.get(url, params=params, timeout=timeout, **kwargs)
            _ = r.content  # read and decode the body here, where a failure is retried
        except TRANSIENT:
            if last:
                raise
        else:
            if r.status_code not in RETRY_STATUS or last:
                return r
        _pause(attempt, backoff)
    raise AssertionError("unreachable")


def get_json(session: requests.Session | None, url: str, *, params: Any = None, timeout: float = TIMEOUT,
             attempts: int = ATTEMPTS, backoff: float = BACKOFF, **kwargs: Any) -> Any:
    """``get``, ``raise_for_status()`` and ``json()``; truncated JSON is retried too."""
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            r = get(session, url, params=params, timeout=timeout, attempts=1, **kwargs)
            if r.status_code in RETRY_STATUS and not last:
                raise TransientHTTPError(f"{r.status_code} from {url}", response=r)
            r.raise_for_status()
            return r.json()
        except (*TRANSIENT, TransientHTTPError, requests.JSONDecodeError):
            if last:
                raise
        _pause(attempt, backoff)
    raise AssertionError("unreachable")
