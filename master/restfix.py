"""Buildbot 4.3's REST API writes JSON responses from a worker thread; make it write on the reactor.

The bug (measured, Buildbot 4.2-4.3 with Twisted 24-26): ``V2RootResource.renderRest``
encodes the JSON answer with ``deferToThread(V2RootResource._write_json_data, ...)``,
and that function calls ``request.write()`` *in the thread*.  Twisted is not
thread-safe: ``request.write`` runs the gzip encoder and appends to the TCP
transport's buffer while the reactor thread may be flushing that same buffer
(``FileDescriptor.doWrite`` swaps ``_tempDataBuffer`` for a new list), so
under concurrent requests on a busy machine a chunk is occasionally lost.
Clients then see ``ContentDecodingError: Received response with
content-encoding: gzip, but failed to decode it`` (the gzip header or a block
is missing) or, without gzip, truncated JSON.  Hammering a sandbox master with
8 threads while two busy loops held both cores reproduced it (1 in ~2500
requests); a bare Twisted server using Buildbot's writer failed 10 of ~9000
gzip requests, with this fix 0 of ~10400 (``tests/rest_probe.py`` is that
server; ``tests/unit/test_restfix.py`` checks that no write leaves the reactor).

The fix keeps what Buildbot wanted (JSON encoding off the reactor, stop early
when the client has gone) and moves every ``request`` call back to the
reactor thread: the thread encodes into one byte string and hands it to the
reactor with ``callFromThread``.  That call is queued before the thread's
result is delivered (Twisted runs ``callFromThread`` calls in order), so the
body is written before ``renderRest`` finishes the request.
"""

from __future__ import annotations

import json
from typing import Any

from buildbot.util import unicode2bytes
from buildbot.www import rest
from twisted.internet import reactor


def _write_on_reactor(request: Any, body: bytes) -> None:
    if rest._is_request_finished(request):  # the client went away meanwhile
        return
    request.setHeader(b"content-length", unicode2bytes(str(len(body))))
    if request.method != b"HEAD":
        request.write(body)


def write_json_data(request: Any, encoder: json.JSONEncoder, data: Any) -> None:
    """Drop-in for ``V2RootResource._write_json_data``: encode here (a thread), write on the reactor."""
    chunks: list[bytes] = []
    for chunk in encoder.iterencode(data):
        if rest._is_request_finished(request):  # only reads two attributes: safe from a thread
            return
        chunks.append(unicode2bytes(chunk))
    reactor.callFromThread(_write_on_reactor, request, b"".join(chunks))


def install() -> None:
    """Replace Buildbot's threaded writer (idempotent; every (re)config calls it)."""
    rest.V2RootResource._write_json_data = staticmethod(write_json_data)


def installed() -> bool:
    return rest.V2RootResource._write_json_data is write_json_data
