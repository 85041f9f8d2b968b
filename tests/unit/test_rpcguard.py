"""``master.rpcguard``: which JSON-RPC methods each Buildbot endpoint takes, and what is refused.

The HTTP answers themselves are checked against a real master in
tests/e2e/test_trust_e2e.py (``test_control_calls_buildbot_would_mishandle_are_refused``).
"""

from __future__ import annotations

from buildbot.data import buildrequests, builds, exceptions, forceschedulers, masters
from buildbot.www import rest

from master import rpcguard


def test_actions_of_real_endpoints() -> None:
    assert rpcguard.actions_of(builds.BuildEndpoint(None, None)) == ("rebuild", "stop")
    assert rpcguard.actions_of(buildrequests.BuildRequestEndpoint(None, None)) == ("cancel", "set_priority")
    assert rpcguard.actions_of(forceschedulers.ForceSchedulerEndpoint(None, None)) == ("force",)
    assert rpcguard.actions_of(masters.MasterEndpoint(None, None)) == ()


def test_refusals() -> None:
    force_ep = forceschedulers.ForceSchedulerEndpoint(None, None)
    names = {"force-release"}
    ok = rpcguard.refusal(force_ep, {"schedulername": "force-release"}, "force", {"priority": "0"}, names)
    assert ok is None
    err = rpcguard.refusal(force_ep, {"schedulername": "release-tags"}, "force", {}, names)
    assert isinstance(err, exceptions.InvalidPathError) and "no force scheduler named 'release-tags'" in str(err)
    err = rpcguard.refusal(force_ep, {"schedulername": "force-release"}, "explode", {}, names)
    assert isinstance(err, rest.BadJsonRpc2) and err.jsonrpccode == rest.JSONRPC_CODES["method_not_found"]
    assert "it takes force" in err.message
    err = rpcguard.refusal(masters.MasterEndpoint(None, None), {}, "stop", {}, names)
    assert isinstance(err, rest.BadJsonRpc2) and "it takes no method" in err.message
    for bad in (10**30, -(2**31) - 1, str(2**40)):
        err = rpcguard.refusal(force_ep, {"schedulername": "force-release"}, "force", {"priority": bad}, names)
        assert isinstance(err, rest.BadJsonRpc2) and "priority" in err.message, bad
    assert rpcguard.refusal(force_ep, {"schedulername": "force-release"}, "force", {"priority": 2**31 - 1},
                            names) is None


def test_installed_by_the_web_config(tmp_path) -> None:
    from farm.settings import Settings
    from master.www import make_www

    make_www(Settings())
    assert rpcguard.installed()
