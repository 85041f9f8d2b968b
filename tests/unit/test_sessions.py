"""``master.sessions``: a session's key follows the users file and the logout counter."""

from __future__ import annotations

from pathlib import Path

import pytest
from buildbot.www.authz import Forbidden

from master import sessions, users


@pytest.fixture
def keys(tmp_path: Path) -> sessions.SessionKeys:
    f = tmp_path / "users"
    users.write(f, {"alice": users.hash_password("correct horse battery"), "bob": users.hash_password("x" * 12)})
    k = sessions.SessionKeys(f)
    k.bind(tmp_path)
    return k


def test_key_changes_with_password_removal_and_logout(keys: sessions.SessionKeys) -> None:
    alice = {"username": "alice", "session_key": keys.key("alice")}
    bob = {"username": "bob", "session_key": keys.key("bob")}
    assert keys.valid(alice) and keys.valid(bob) and keys.key("alice") != keys.key("bob")
    assert keys.valid({"anonymous": True})
    assert not keys.valid({"username": "alice"})  # a session from before this feature: no key
    keys.revoke("alice")  # logout: every alice session ends, bob's stay
    assert not keys.valid(alice) and keys.valid(bob)
    alice = {"username": "alice", "session_key": keys.key("alice")}
    users.write(keys.users_file, {"alice": users.hash_password("correct horse battery")})  # new hash, bob removed
    assert not keys.valid(alice) and not keys.valid(bob) and keys.key("bob") == ""


def test_unreadable_counters_trust_no_session(keys: sessions.SessionKeys) -> None:
    alice = {"username": "alice", "session_key": keys.key("alice")}
    assert keys.state is not None
    keys.state.write_text("{not json")
    assert not keys.valid(alice)


def test_authz_refuses_a_stale_session(keys: sessions.SessionKeys) -> None:
    from buildbot.plugins import util

    authz = sessions.SessionAuthz(keys, allowRules=[util.AnyControlEndpointMatcher(role="admins")],
                                  roleMatchers=[util.RolesFromUsername(roles=["admins"], usernames=["alice"])])
    with pytest.raises(Forbidden, match="log in again"):
        authz.assertUserAllowed(("builds", 1), "stop", {}, {"username": "alice", "session_key": "old"})
