"""Revocable web sessions: logout, a password change and ``users remove`` end a user's sessions.

Buildbot's session is a signed JWT cookie that stays valid until it
expires (7 days): measured, a cookie kept admin rights after logout, after
the password changed and after ``users remove``.  Here every session
carries a ``session_key`` made at login from the user's password hash and
a per-user counter; a control call (force, stop, rebuild, cancel) checks
it against the users file and the counter *now*.  A new hash (password
changed), no line (user removed) or a bumped counter (logout: every
session of that user, a copied cookie too) makes the key stale: 403
"log in again".  The counters live in ``<master basedir>/sessions.json``
(0600) so a restart does not bring a logged-out cookie back.  Reads
stay public whatever the cookie says.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from buildbot.plugins import util
from buildbot.www.auth import LogoutResource, UserInfoProviderBase
from buildbot.www.authz import Forbidden
from twisted.internet import defer
from twisted.python import log

from master import users

STATE_NAME = "sessions.json"
STALE = b"your session has ended (logged out, password changed or user removed): log in again"


class SessionKeys:
    """The current key of each user's sessions, from the users file and the logout counters."""

    def __init__(self, users_file: Path) -> None:
        self.users_file = users_file
        self.state: Path | None = None  # set once the master's basedir is known (``bind``)

    def bind(self, basedir: str | Path) -> None:
        self.state = Path(basedir) / STATE_NAME

    def _counters(self) -> dict[str, int]:
        try:
            data = json.loads(self.state.read_text()) if self.state else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # unreadable: no session is trusted rather than all
            log.msg(f"vllm-cpu: {self.state}: {exc}; every session must log in again")
            return {"*": -1}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {"*": -1}

    def key(self, username: str) -> str:
        """"" when the user has no line (removed) or the files cannot be read: such a key never matches."""
        try:
            stored = users.read(self.users_file).get(username)
        except (OSError, users.UsersFileError):
            return ""
        counters = self._counters()
        if stored is None or "*" in counters:
            return ""
        material = f"{stored}\0{counters.get(username, 0)}".encode()
        return hashlib.sha256(material).hexdigest()[:32]

    def valid(self, user_info: dict[str, Any]) -> bool:
        name = user_info.get("username")
        if not name or user_info.get("anonymous"):
            return True  # anonymous: the authz rules decide
        given = user_info.get("session_key")
        return bool(given) and given == self.key(str(name))

    def revoke(self, username: str) -> None:
        """End every session of ``username`` (atomic 0600 write of the counters)."""
        if self.state is None:
            return
        counters = {k: v for k, v in self._counters().items() if k != "*"}
        counters[username] = counters.get(username, 0) + 1
        fd, tmp = tempfile.mkstemp(dir=self.state.parent, prefix=f".{self.state.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(counters, fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.state)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class SessionInfo(UserInfoProviderBase):
    """At login: the session gets the user's current key."""

    def __init__(self, keys: SessionKeys) -> None:
        self.keys = keys

    def getUserInfo(self, username: str) -> defer.Deferred[dict[str, str]]:
        return defer.succeed({"session_key": self.keys.key(username)})


class RevokingLogout(LogoutResource):
    """Logout ends every session of the user, not only the cookie of this browser."""

    def __init__(self, master: Any, keys: SessionKeys) -> None:
        super().__init__(master)
        self.keys = keys

    def render_GET(self, request: Any) -> bytes:
        name = (request.getSession().user_info or {}).get("username")
        if name:
            self.keys.revoke(str(name))
        return super().render_GET(request)


class SessionAuthz(util.Authz):
    """Buildbot's authz, after the session's key is checked against the users file now."""

    def __init__(self, keys: SessionKeys, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys = keys

    def assertUserAllowed(self, ep: Any, action: str, options: dict[str, Any], userDetails: dict[str, Any]) -> Any:
        if not self.keys.valid(userDetails or {}):
            raise Forbidden(STALE)
        return super().assertUserAllowed(ep, action, options, userDetails)
