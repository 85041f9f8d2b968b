"""A local GitHub REST server for the release endpoints the ``github_release`` step uses.

Implements, on 127.0.0.1, as GitHub Enterprise lays them out (API under
``/api/v3``, uploads under ``/api/uploads``) and with the response shapes
GitHub documents (REST API 2022-11-28, "Releases" and "Release assets"):

* ``GET    /repos/{owner}/{repo}``                        (only what a client may ask first)
* ``GET    /repos/{owner}/{repo}/releases/tags/{tag}``   200 release, 404 ``Not Found``
* ``POST   /repos/{owner}/{repo}/releases``              201 release, 422 ``already_exists``
* ``GET    /repos/{owner}/{repo}/releases/{id}``
* ``PATCH  /repos/{owner}/{repo}/releases/{id}``
* ``GET    /repos/{owner}/{repo}/releases/{id}/assets``  paginated (``per_page``, ``page``, ``Link``)
* ``POST   {upload_url}?name=&label=``                   201 asset, 422 ``already_exists`` for a taken name

Every request needs ``Authorization: token T`` or ``Bearer T`` with the
configured token (else 401 ``Bad credentials``).  ``fail_next`` makes the
next requests answer an error status (a transient 502), ``fail_after`` does
the request and then answers an error (a lost response), ``requests`` records
what was asked (method, path) for the tests.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DOCS = "https://docs.github.com/rest"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub:
    def __init__(self, token: str, owner: str = "vllm-cpu", repo: str = "vllm-cpu") -> None:
        self.token = token
        self.owner, self.repo = owner, repo
        self.releases: dict[int, dict] = {}
        self.blobs: dict[int, bytes] = {}  # asset id -> content
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []  # statuses to answer, one per coming request (nothing done)
        self.fail_after: list[int] = []  # statuses to answer after doing the request (a lost response)
        self._ids = iter(range(1, 1 << 30))
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ URLs
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/v3"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def release(self, tag: str) -> dict | None:
        return next((r for r in self.releases.values() if r["tag_name"] == tag), None)

    # ----------------------------------------------------------- JSON shapes
    def _user(self) -> dict:
        return {"login": "vllm-cpu-bot", "id": 1, "node_id": "MDQ6VXNlcjE=", "type": "Bot", "site_admin": False,
                "url": f"{self.api_url}/users/vllm-cpu-bot", "html_url": f"{self.base}/vllm-cpu-bot"}

    def _release_json(self, rel: dict) -> dict:
        api = f"{self.api_url}/repos/{self.full_name}/releases/{rel['id']}"
        return {
            "url": api, "html_url": f"{self.base}/{self.full_name}/releases/tag/{rel['tag_name']}",
            "assets_url": api + "/assets",
            "upload_url": f"{self.base}/api/uploads/repos/{self.full_name}/releases/{rel['id']}/assets{{?name,label}}",
            "tarball_url": f"{self.api_url}/repos/{self.full_name}/tarball/{rel['tag_name']}",
            "zipball_url": f"{self.api_url}/repos/{self.full_name}/zipball/{rel['tag_name']}",
            "id": rel["id"], "node_id": f"RE_{rel['id']}", "tag_name": rel["tag_name"],
            "target_commitish": rel["target_commitish"], "name": rel["name"], "body": rel["body"],
            "draft": rel["draft"], "prerelease": rel["prerelease"], "created_at": rel["created_at"],
            "published_at": rel["published_at"], "author": self._user(),
            "assets": [self._asset_json(a) for a in rel["assets"]],
        }

    def _asset_json(self, a: dict) -> dict:
        return {
            "url": f"{self.api_url}/repos/{self.full_name}/releases/assets/{a['id']}",
            "browser_download_url": f"{self.base}/{self.full_name}/releases/download/{a['tag']}/{a['name']}",
            "id": a["id"], "node_id": f"RA_{a['id']}", "name": a["name"], "label": a["label"], "state": "uploaded",
            "content_type": a["content_type"], "size": a["size"], "download_count": 0,
            "created_at": a["created_at"], "updated_at": a["created_at"], "uploader": self._user(),
        }

    # -------------------------------------------------------------- handler
    def _handler(self):
        gh = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, doc: object, headers: dict | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, errors: list | None = None) -> None:
                doc = {"message": message, "documentation_url": DOCS, "status": str(status)}
                if errors:
                    doc["errors"] = errors
                self._send(status, doc)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                body = self._body()
                with gh._lock:
                    gh.requests.append((method, url.path))
                    status = gh.fail_next.pop(0) if gh.fail_next else None
                if status:
                    self._error(status, "Server Error")
                    return
                auth = self.headers.get("Authorization", "")
                if auth not in (f"token {gh.token}", f"Bearer {gh.token}"):
                    self._error(401, "Bad credentials")
                    return
                with gh._lock:
                    lost = gh.fail_after.pop(0) if gh.fail_after else None
                    gh._route(_Discard(self) if lost else self, method, url.path, parse_qs(url.query), body)
                if lost:
                    self._error(lost, "Server Error")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        return Handler

    def _route(self, h, method: str, path: str, query: dict, body: bytes) -> None:
        repo = re.escape(self.full_name)
        api, uploads = f"^/api/v3/repos/{repo}", f"^/api/uploads/repos/{repo}"
        routes = [
            (("GET",), api, self._get_repository),
            (("GET",), api + r"/releases/tags/(.+)", self._get_release_by_tag),
            (("POST",), api + "/releases", self._create_release),
            (("GET", "PATCH"), api + r"/releases/(\d+)", self._get_or_update_release),
            (("GET",), api + r"/releases/(\d+)/assets", self._list_assets),
            (("POST",), uploads + r"/releases/(\d+)/assets", self._upload_asset),
        ]
        for methods, pattern, action in routes:
            m = re.fullmatch(pattern, path)
            if m and method in methods:
                action(h, method, m, query, body)
                return
        h._error(404, "Not Found")

    @staticmethod
    def _invalid(h, resource: str, code: str, field: str) -> None:
        h._error(422, "Validation Failed", [{"resource": resource, "code": code, "field": field}])

    def _get_repository(self, h, method: str, m: re.Match, query: dict, body: bytes) -> None:
        h._send(200, {"id": 1, "name": self.repo, "full_name": self.full_name, "private": False,
                      "owner": self._user(), "url": f"{self.api_url}/repos/{self.full_name}"})

    def _get_release_by_tag(self, h, method: str, m: re.Match, query: dict, body: bytes) -> None:
        rel = self.release(m.group(1))
        h._send(200, self._release_json(rel)) if rel else h._error(404, "Not Found")

    def _create_release(self, h, method: str, m: re.Match, query: dict, body: bytes) -> None:
        doc = json.loads(body or b"{}")
        if not doc.get("tag_name"):
            self._invalid(h, "Release", "missing_field", "tag_name")
            return
        if self.release(doc["tag_name"]):
            self._invalid(h, "Release", "already_exists", "tag_name")
            return
        rid = next(self._ids)
        self.releases[rid] = {"id": rid, "tag_name": doc["tag_name"], "name": doc.get("name") or doc["tag_name"],
                              "body": doc.get("body") or "", "draft": bool(doc.get("draft")),
                              "prerelease": bool(doc.get("prerelease")),
                              "target_commitish": doc.get("target_commitish") or "main",
                              "make_latest": doc.get("make_latest", "true"),
                              "created_at": _now(), "published_at": _now(), "assets": []}
        h._send(201, self._release_json(self.releases[rid]))

    def _get_or_update_release(self, h, method: str, m: re.Match, query: dict, body: bytes) -> None:
        rel = self.releases.get(int(m.group(1)))
        if rel is None:
            h._error(404, "Not Found")
            return
        if method == "PATCH":
            doc = json.loads(body or b"{}")
            for k in ("tag_name", "name", "body", "draft", "prerelease", "target_commitish", "make_latest"):
                if k in doc:
                    rel[k] = doc[k]
        h._send(200, self._release_json(rel))

    def _list_assets(self, h, method: str, m: re.Match, query: dict, body: bytes) -> None:
        rel = self.releases.get(int(m.group(1)))
        if rel is None:
            h._error(404, "Not Found")
            return
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        items = rel["assets"][(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(rel["assets"]):
            nxt = f"{self.api_url}/repos/{self.full_name}/releases/{rel['id']}/assets?per_page={per_page}"
            headers["Link"] = f'<{nxt}&page={page + 1}>; rel="next"'
        h._send(200, [self._asset_json(a) for a in items], headers)

    def _upload_asset(self, h, method: str, m: re.Match, query: dict, body: bytes) -> None:
        rel = self.releases.get(int(m.group(1)))
        name = query.get("name", [""])[0]
        if rel is None:
            h._error(404, "Not Found")
            return
        if not name:
            self._invalid(h, "ReleaseAsset", "missing_field", "name")
            return
        if any(a["name"] == name for a in rel["assets"]):
            self._invalid(h, "ReleaseAsset", "already_exists", "name")
            return
        aid = next(self._ids)
        asset = {"id": aid, "name": name, "label": query.get("label", [""])[0], "tag": rel["tag_name"],
                 "content_type": h.headers.get("Content-Type", "application/octet-stream"),
                 "size": len(body), "created_at": _now()}
        rel["assets"].append(asset)
        self.blobs[aid] = body
        h._send(201, self._asset_json(asset))


class _Discard:
    """Stands in for the handler: the request is done, its answer is lost."""

    def __init__(self, handler) -> None:
        self.headers = handler.headers

    def _send(self, *args, **kwargs) -> None:
        pass

    def _error(self, *args, **kwargs) -> None:
        pass
