"""A real Twisted web server that answers like Buildbot's REST API, for ``tests/unit/test_restfix.py``.

``python -m tests.rest_probe original|fixed PORT_FILE`` serves JSON exactly the
way ``V2RootResource.renderRest`` ends (gzip ``EncodingResourceWrapper``,
``deferToThread(V2RootResource._write_json_data, ...)``, then ``finish``),
with Buildbot's own writer or ``master.restfix``'s.  Every ``request.write``
records whether it ran on the reactor thread; ``GET /stats`` returns the
counts.  Twisted only, no master: the test runs it in a subprocess because
the global reactor cannot be restarted inside pytest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from buildbot.www.rest import V2RootResource
from twisted.internet import defer, reactor, threads
from twisted.python import threadable
from twisted.web import resource, server
from twisted.web.resource import EncodingResourceWrapper
from twisted.web.server import GzipEncoderFactory

STATS = {"writes": 0, "off_reactor_writes": 0}
# About the size of a builds?property=* answer: several gzip blocks per response.
DATA = {"builds": [{"buildid": i, "properties": {f"p{j}": [f"value {i} {j} " * 4, "src"] for j in range(30)}}
                   for i in range(40)], "meta": {}}


class CountingRequest(server.Request):
    def write(self, data: bytes) -> None:
        STATS["writes"] += 1  # a lost update off the reactor only lowers the count
        if not threadable.isInIOThread():
            STATS["off_reactor_writes"] += 1
        super().write(data)


class Json(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        if request.path == b"/stats":
            return json.dumps(STATS).encode()

        @defer.inlineCallbacks
        def answer():
            encoder = json.JSONEncoder(sort_keys=True)
            yield threads.deferToThread(V2RootResource._write_json_data, request, encoder, DATA)
            request.finish()

        answer()
        return server.NOT_DONE_YET


def main(argv: list[str]) -> None:
    mode, port_file = argv
    if mode == "fixed":
        from master import restfix

        restfix.install()
    threadable.registerAsIOThread()
    site = server.Site(EncodingResourceWrapper(Json(), [GzipEncoderFactory()]))
    site.requestFactory = CountingRequest
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    Path(port_file).write_text(str(port.getHost().port))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
