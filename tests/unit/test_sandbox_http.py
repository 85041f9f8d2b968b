"""``sandbox.http``: polling reads survive what a busy master does, against a real local HTTP server.

The server (stdlib ``http.server`` on 127.0.0.1) misbehaves on purpose for
the first requests of a path: a gzip body that does not decode (what
Buildbot 4.3 sent under load), a dropped connection, a 503, truncated JSON.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from sandbox import http

GOOD = json.dumps({"builders": [{"builderid": 1, "name": "release"}], "meta": {}}).encode()


class Flaky(BaseHTTPRequestHandler):
    """``/<fault>/<n>``: the first n requests fail with <fault>, then a good gzip JSON answer."""

    seen: Counter = Counter()

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        _, fault, n = self.path.split("/")
        Flaky.seen[self.path] += 1
        if Flaky.seen[self.path] > int(n):
            fault = "none"
        if fault == "drop":
            self.connection.close()  # no answer at all
            return
        if fault == "status":
            self.send_response(503)
            self.end_headers()
            return
        if fault == "error":
            body = b'{"error": "no such builder"}'
            self.send_response(404)
        else:
            body = gzip.compress(GOOD)
            if fault == "gzip":
                body = body[10:]  # the gzip header lost, as in the ContentDecodingError seen
            elif fault == "truncated":
                body, fault = GOOD[: len(GOOD) // 2], "plain"
            self.send_response(200)
            if fault != "plain":
                self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("fault", ["gzip", "drop", "status", "truncated"])
def test_transient_failures_are_retried(server: str, fault: str) -> None:
    url = f"{server}/{fault}/2"
    with requests.Session() as s:
        # Without retries the first read fails the way the e2e tests did.
        with pytest.raises((requests.RequestException, ValueError)):
            r = s.get(f"{server}/{fault}/1", timeout=10)
            r.raise_for_status()
            r.json()
        assert http.get_json(s, url, backoff=0.01)["builders"][0]["name"] == "release"
    assert Flaky.seen[f"/{fault}/2"] == 3


def test_gives_up_after_the_last_attempt(server: str) -> None:
    with pytest.raises(requests.exceptions.ContentDecodingError):
        http.get_json(None, f"{server}/gzip/99", attempts=3, backoff=0.01)
    assert Flaky.seen["/gzip/99"] == 3
    assert http.get(None, f"{server}/status/99", attempts=2, backoff=0.01).status_code == 503


def test_a_client_error_is_not_retried(server: str) -> None:
    with pytest.raises(requests.HTTPError):
        http.get_json(None, f"{server}/error/99", backoff=0.01)
    assert Flaky.seen["/error/99"] == 1
