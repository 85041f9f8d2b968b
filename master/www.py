"""Web UI, REST API, login, the tag webhook and authz.

Who may do what (see "Security model" in master/README.md):

* reading (UI, REST GET) is public;
* with ``[www] users_file``: forcing, stopping and rebuilding need a logged-in
  user named in ``[www] admins``; login is HTTP basic against argon2 hashes
  (``master/users.py``).  Without it (the sandbox) anyone who reaches the web
  port may do everything, so the web port must then stay on loopback;
* changes come only from the tag poller and ``/change_hook/github``, whose
  posts are signed with ``[upstream] webhook_secret`` (``master/webhook.py``);
* every request body over ``[www] max_request_bytes`` is answered 400 unread.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from buildbot import config
from buildbot.plugins import util
from buildbot.www.auth import AuthRealm, NoAuth, TwistedICredAuthBase
from twisted.cred.portal import Portal
from twisted.python import log
from twisted.web import server
from twisted.web.guard import BasicCredentialFactory

from farm.settings import Settings
from master import loginlimit, matrix, matrix_app, readiness, restfix, rpcguard, sessions, uistyle, users
from master.tags import UpstreamTags
from master.webhook import TagWebhook
from vllm_cpu_build import variants
from vllm_cpu_build.index import list_index_files
from vllm_cpu_build.variants import Catalog


def check_users_file(path: Path, admins: tuple[str, ...]) -> list[str]:
    """Problems with the [www] users file (kept here: checkconfig and the tests ask www)."""
    return users.check_file(path, admins)


def limited_request(max_bytes: int) -> type[server.Request]:
    """A twisted.web Request class that refuses bodies over ``max_bytes`` (HTTP 400) without storing them."""

    class LimitedRequest(server.Request):
        _received = 0
        _too_big = False

        def gotLength(self, length: int | None) -> None:
            self._too_big = length is not None and length > max_bytes
            super().gotLength(0 if self._too_big else length)

        def handleContentChunk(self, data: bytes) -> None:
            self._received += len(data)
            self._too_big = self._too_big or self._received > max_bytes
            if not self._too_big:
                super().handleContentChunk(data)

        def process(self) -> None:
            if not self._too_big:
                return super().process()
            self.site = self.channel.site
            # Shaped like a JSON-RPC error, the format REST clients of Buildbot read.
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": (
                f"request body over www.max_request_bytes ({max_bytes} bytes); nothing was done")}}).encode()
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"application/json")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return None

    return LimitedRequest


class _LimitsRequests:
    """Buildbot calls the auth's ``reconfigAuth`` right after it (re)built its web site:
    the one hook from the configuration into the site, used for the body-size limit."""

    max_request_bytes = 65536

    def reconfigAuth(self, master: Any, new_config: Any) -> None:
        super().reconfigAuth(master, new_config)  # type: ignore[misc]
        site = getattr(master.www, "site", None)
        if site is not None:  # read per connection: new connections get the new limit
            site.requestFactory = limited_request(self.max_request_bytes)


class OpenAuth(_LimitsRequests, NoAuth):
    """No login (the sandbox): everyone may do everything; the UI shows no login bar."""

    def __init__(self, max_request_bytes: int) -> None:
        super().__init__()
        self.max_request_bytes = max_request_bytes

    def getConfigDict(self) -> dict[str, str]:
        return {"name": "NoAuth"}  # the web UI hides its login bar for this name


class UsersFileAuth(_LimitsRequests, TwistedICredAuthBase):
    """HTTP basic login against the argon2 users file (no Digest: it needs the plain password);
    sessions are revocable (``master/sessions.py``)."""

    def __init__(self, users_file: Path, max_request_bytes: int, keys: sessions.SessionKeys | None = None) -> None:
        self.keys = keys or sessions.SessionKeys(users_file)
        super().__init__([BasicCredentialFactory(b"buildbot")], [users.HashedUsersChecker(users_file)],
                         userInfoProvider=sessions.SessionInfo(self.keys))
        self.max_request_bytes = max_request_bytes
        self.limiter = loginlimit.FailureLimiter()

    def reconfigAuth(self, master: Any, new_config: Any) -> None:
        super().reconfigAuth(master, new_config)
        self.keys.bind(master.basedir)

    def getLogoutResource(self) -> Any:
        return sessions.RevokingLogout(self.master, self.keys)

    def getLoginResource(self) -> Any:
        # Buildbot's basic-auth login behind the per-client failure limit (one limiter per config).
        return loginlimit.LimitedLogin(Portal(AuthRealm(self.master, self), self.checkers),
                                       self.credentialFactories, self.limiter)

    def getConfigDict(self) -> dict[str, str]:
        return {"name": "login"}


def _loopback(interface: str) -> bool:
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return interface == "localhost"


def make_www(settings: Settings, tags: UpstreamTags | None = None, catalog: Catalog | None = None) -> dict:
    restfix.install()  # Buildbot 4.3 writes REST answers from a thread: corrupt gzip under load
    rpcguard.install()  # and answers 200/500 to control calls it cannot do: 4xx instead
    uistyle.install()  # force-form errors in red next to their fields (Buildbot ships no CSS for them)
    w = settings.www
    # The release matrix: a menu entry (#/releases) whose page and JSON the WSGI app serves.
    releases = matrix_app.MatrixApp(catalog or variants.load(), settings.index.simple_url,
                                    settings.master.web_url_slash, list_index_files, interval=w.matrix_interval,
                                    readiness_builders=tuple(readiness.builder_names(settings)))
    www: dict = {
        "port": f"tcp:{settings.master.web_port}:interface={settings.master.web_interface}",
        "plugins": {"waterfall_view": {}, "console_view": {}, "grid_view": {},
                    "wsgi_dashboards": [{"name": matrix.NAME, "caption": "Release matrix", "app": releases,
                                         "order": 2, "icon": "table"}]},
        # No "base" dialect: it lets the poster set build properties. Tags come
        # from the poller or the signed webhook, which makes changes without any.
        "change_hook_dialects": {},
    }
    if settings.upstream.webhook_secret:
        www["change_hook_dialects"]["github"] = {
            "custom_class": TagWebhook, "secret": util.Secret(settings.upstream.webhook_secret),
            "tags": tags or UpstreamTags(settings.upstream), "repository": settings.upstream.url,
            "max_bytes": w.max_request_bytes,
        }
    if not w.users_file:
        if not _loopback(settings.master.web_interface):
            config.error(f"master.web_interface = {settings.master.web_interface!r} without www.users_file: "
                         "anyone reaching the web port could force releases; set [www] users_file and admins")
        www["auth"] = OpenAuth(w.max_request_bytes)
        return www
    if w.users_file.exists():
        for problem in check_users_file(w.users_file, w.admins):
            config.error(problem)
    else:  # like a missing secret: checkconfig before deployment passes; nobody can log in
        log.msg(f"vllm-cpu: www.users_file {w.users_file} missing; nobody can log in")
    # Reading stays public; forcing, stopping and rebuilding need a logged-in admin.
    keys = sessions.SessionKeys(w.users_file)
    www["auth"] = UsersFileAuth(w.users_file, w.max_request_bytes, keys)
    www["authz"] = sessions.SessionAuthz(
        keys,
        allowRules=[util.AnyControlEndpointMatcher(role="admins")],
        roleMatchers=[util.RolesFromUsername(roles=["admins"], usernames=list(w.admins))],
    )
    return www
