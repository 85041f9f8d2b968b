"""The one REST client of the sandbox and the e2e tests, and HTTP reads that survive a transient failure.

``Client`` speaks to one Buildbot master: its REST API (``/api/v2``), the
force schedulers' JSON-RPC, the signed GitHub change hook, the release
matrix, and the waits built on them (a release's result, an images build,
an idle builder).  It knows nothing of how the master was started, so the
tests drive masters they start themselves (production layout,
multi-master) with it as well.

A busy 2-core machine makes the master or the index slow, drop a connection
or (Buildbot 4.3, see ``master/restfix.py``) send a broken gzip body.  Every
polling loop reads through ``get``/``get_json``: a connection error, a
timeout, a body that fails to decode, a 502/503/504 or truncated JSON is
retried with backoff; anything else (a 4xx, the last failure) is the
caller's.  Only idempotent GETs are retried; a POST (force, change hook) is
sent once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from farm import report
from farm.names import IMAGES, RELEASE
from master import matrix
from sandbox.procs import until

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


Json = dict[str, Any]


class Client:
    """REST client of the master at ``web_url``; ``log``: where progress lines go."""

    def __init__(self, web_url: str, webhook_secret: str = "", log: Callable[[str], None] | None = None) -> None:
        self.web_url = web_url
        self.webhook_secret = webhook_secret  # the tag webhook's shared secret, for ``webhook()``
        self.log = log or (lambda msg: None)
        self.session = requests.Session()
        # Uncompressed answers: under load, Buildbot 4.3 on Twisted 26.10 sometimes sends a gzip answer
        # on a kept-alive connection without its gzip header, which no client can decode.
        self.session.headers["Accept-Encoding"] = "identity"

    until = staticmethod(until)  # the one polling loop, for whoever waits on this master

    # ------------------------------------------------------------- reads
    def api(self, path: str, **params: Any) -> list[Json]:
        """The items of ``/api/v2/<path>`` (``params``: filters, ``property``, ``order``)."""
        data = get_json(self.session, self.web_url + "api/v2/" + path, params=params)
        key = [k for k in data if k != "meta"][0]
        items: list[Json] = data[key]
        return items

    def builder_id(self, name: str) -> int:
        return {b["name"]: b["builderid"] for b in self.api("builders")}[name]

    def builders(self) -> dict[int, str]:
        return {b["builderid"]: b["name"] for b in self.api("builders")}

    def connected_workers(self) -> set[str]:
        try:
            return {w["name"] for w in self.api("workers") if w["connected_to"]}
        except requests.RequestException:
            return set()

    def release_builds(self) -> list[Json]:
        return self.api(f"builders/{self.builder_id(RELEASE)}/builds", property="*", order="buildid")

    def newest_build(self, builder: str) -> int:
        return max([b["buildid"] for b in self.api(f"builders/{self.builder_id(builder)}/builds")] or [0])

    def buildrequests_total(self) -> int:
        return len(self.api("buildrequests"))

    def data(self, request: report.Request) -> Any:
        """One data-API request of ``farm.report.children`` over REST (same resource paths)."""
        path, filters = request
        data = get_json(self.session, self.web_url + "api/v2/" + "/".join(map(str, path)), params=filters)
        if path[-1] == "properties":  # {"properties": [{name: [value, source]}]}
            return (data["properties"] or [{}])[0]
        items = data[[k for k in data if k != "meta"][0]]
        single = len(path) % 2 == 0 and isinstance(path[-1], int)
        return (items[0] if items else None) if single else items

    def children(self, release_buildid: int) -> tuple[list[Json], list[Json]]:
        """(builds, pending build requests) a release build triggered (``farm.report.children``)."""
        gen = report.children(release_buildid)
        try:
            request = next(gen)
            while True:
                request = gen.send(self.data(request))
        except StopIteration as done:
            found = done.value
        builds = [c for c in found if "buildid" in c]
        pending = [{**c, "properties": report.flatten(c["properties"])} for c in found if "buildid" not in c]
        return builds, pending

    def table(self, release_buildid: int) -> list[Json]:
        """The release's rows (``farm.report.child_row``: the same table the release build logs)."""
        builds, pending = self.children(release_buildid)
        rows = [report.child_row(c) for c in builds + pending]
        return sorted(rows, key=lambda r: (r["variant"], r["arch"]))

    def buildset_properties(self, bsid: int) -> Json:
        props: Json = report.flatten(self.data((("buildsets", bsid, "properties"), {})))
        return props

    def matrix(self) -> Json:
        """The release matrix as JSON (``master/matrix.py``), from its documented URL."""
        doc: Json = get_json(self.session, matrix.json_url(self.web_url))
        return doc

    def build_logs(self, buildid: int) -> dict[str, str]:
        """Every log of a build: "step/log" -> text."""
        out = {}
        for st in self.api(f"builds/{buildid}/steps"):
            for lg in self.api(f"steps/{st['stepid']}/logs"):
                r = get(self.session, self.web_url + f"api/v2/logs/{lg['logid']}/raw")
                r.raise_for_status()
                out[f"{st['name']}/{lg['name']}"] = r.text
        return out

    # ------------------------------------------------------------- writes (sent once: not idempotent)
    def force(self, scheduler: str = "force-release", builder: str | int | None = RELEASE,
              session: requests.Session | None = None, **params: Any) -> requests.Response:
        """JSON-RPC ``force``; ``session``: e.g. one logged in (default: anonymous)."""
        if isinstance(builder, str):
            builder = self.builder_id(builder)
        if builder is not None:
            params["builderid"] = builder
        body = {"jsonrpc": "2.0", "method": "force", "id": 1, "params": params}
        url = self.web_url + f"api/v2/forceschedulers/{scheduler}"
        return (session or self.session).post(url, json=body, timeout=TIMEOUT)

    def webhook(self, payload: Json | bytes, event: str = "push", secret: str | None = "",
                headers: dict[str, str] | None = None) -> requests.Response:
        """POST ``payload`` to ``/change_hook/github`` as GitHub does, signed with ``secret``
        ("" = ``webhook_secret``, None = unsigned)."""
        from master.webhook import signature

        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h = {"Content-Type": "application/json", "X-GitHub-Event": event}
        if secret is not None:
            h["X-Hub-Signature-256"] = signature((secret or self.webhook_secret).encode(), body)
        h.update(headers or {})
        return self.session.post(self.web_url + "change_hook/github", data=body, headers=h, timeout=60)

    # ------------------------------------------------------------- waits
    def wait_release(self, version: str, after: int = 0, timeout: float = 900, progress: bool = False) -> Json:
        """Wait for the result of a release build of ``version`` (buildid > after).

        A release ends once its builds have finished or wait for a worker of
        an arch nobody serves (the sandbox has no aarch64 worker).
        Returns {"release": build, "rows": table, "seconds": ...}.
        """
        t0 = time.monotonic()
        seen: dict[int, str] = {}
        names = self.builders()
        release = None
        while time.monotonic() - t0 < timeout:
            release = release or self._release_of(version, after, progress)
            if release is not None:
                rel = self.api(f"builds/{release['buildid']}", property="*")[0]
                if progress:
                    self._show_progress(release["buildid"], names, seen)
                if rel["complete"]:
                    return {"release": rel, "rows": self.table(release["buildid"]),
                            "seconds": time.monotonic() - t0}
            time.sleep(1)
        raise TimeoutError(f"release of {version} not done after {timeout}s")

    def _release_of(self, version: str, after: int, progress: bool) -> Json | None:
        for b in self.release_builds():
            if b["buildid"] > after and report.flatten(b.get("properties")).get("version") == version:
                if progress:
                    self.log(f"release #{b['number']} for {version} started")
                return b
        return None

    def _show_progress(self, release_buildid: int, names: dict[int, str], seen: dict[int, str]) -> None:
        """Log each triggered build's state when it changed since the last look."""
        builds, _ = self.children(release_buildid)
        for b in builds:
            state = f"{b['state_string']}" + (" (done)" if b["complete"] else "")
            if seen.get(b["buildid"]) != state:
                self.log(f"  {names[b['builderid']]} #{b['number']}: {b['state_string']}")
            seen[b["buildid"]] = state

    def wait_images(self, version: str, after: int = 0, timeout: float = 900) -> Json:
        """The first finished ``images`` build (buildid > after) for upstream ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for b in self.api(f"builders/{self.builder_id(IMAGES)}/builds", property="*", order="buildid"):
                    props = report.flatten(b.get("properties"))
                    if b["buildid"] > after and props.get("version") == version and b["complete"]:
                        return b
            except requests.RequestException:
                pass  # a busy master: ask again
            time.sleep(1)
        raise TimeoutError(f"no finished images build of {version} after {timeout:.0f}s")

    def wait_idle(self, builder: str, timeout: float = 900) -> None:
        """Until ``builder`` has no build running and no request waiting (quietly gives up after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                bid = self.builder_id(builder)
                busy = [b for b in self.api(f"builders/{bid}/builds") if not b["complete"]]
                busy += [r for r in self.api(f"builders/{bid}/buildrequests") if not r["complete"]]
            except (requests.RequestException, KeyError):
                return  # no master, or no such builder: nothing runs
            if not busy:
                return
            time.sleep(2)

    def wait_up(self, timeout: float = 120, alive: Callable[[], None] | None = None) -> None:
        """Until the master answers REST (``alive``: raises when the process behind it has exited)."""
        wait_up(self.web_url + "api/v2/builders", "master", timeout, alive, self.session)


def wait_up(url: str, what: str, timeout: float = 60, alive: Callable[[], None] | None = None,
            session: requests.Session | None = None) -> None:
    """Until ``url`` answers below 500; ``alive`` raises when the server's process has exited."""

    def up() -> bool:
        if alive is not None:
            alive()
        try:
            return (session or requests).get(url, timeout=10).status_code < 500
        except requests.RequestException:
            return False

    until(up, timeout, f"{what} at {url}")
