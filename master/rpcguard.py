"""JSON-RPC control calls answer 4xx for what Buildbot 4.3 answers 200-with-null or 500.

Measured against a sandbox master: ``force`` on a scheduler that is not a
force scheduler (``release-tags``) raised inside Buildbot (HTTP 500); an
unknown method on a force scheduler or scheduler answered ``200
{"result": null}`` as if it had worked; on a build request, HTTP 500.
This wraps ``V2RootResource.getEndpoint`` (after Buildbot's own authz
check, so an anonymous caller still gets 403 first) and refuses such calls
before any endpoint runs: an unknown method is JSON-RPC's ``method not
found`` (HTTP 400, naming the methods the resource takes), a missing force
scheduler is HTTP 404, a priority out of the database's range HTTP 400.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from buildbot.data import buildrequests, exceptions, forceschedulers, schedulers, workers
from buildbot.www import rest
from twisted.internet import defer

# Endpoints whose ``control`` dispatches by hand; the others use Buildbot's ``action<Name>`` methods.
_ACTIONS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (forceschedulers.ForceSchedulerEndpoint, ("force",)),
    (schedulers.SchedulerEndpoint, ("enable",)),
    (buildrequests.BuildRequestEndpoint, ("cancel", "set_priority")),
    (workers.WorkerEndpoint, ("stop", "pause", "unpause", "kill")),
)
PRIORITY_RANGE = (-(2**31), 2**31 - 1)  # the database column is a 32-bit integer
_original = rest.V2RootResource.getEndpoint


def actions_of(endpoint: Any) -> tuple[str, ...]:
    """The JSON-RPC methods ``endpoint`` takes."""
    for cls, actions in _ACTIONS:
        if isinstance(endpoint, cls):
            return actions
    names = (n[len("action"):] for n in dir(endpoint) if n.startswith("action") and len(n) > len("action"))
    return tuple(sorted(n[0].lower() + n[1:] for n in names if callable(getattr(endpoint, "action" + n))))


def refusal(endpoint: Any, kwargs: dict[str, Any], method: str, params: dict[str, Any],
            force_schedulers: set[str]) -> Exception | None:
    """The error for a control call Buildbot would mishandle, or None to let it run."""
    actions = actions_of(endpoint)
    if method not in actions:
        takes = f"it takes {', '.join(actions)}" if actions else "it takes no method"
        return rest.BadJsonRpc2(f"unknown method {method!r} for this resource: {takes}"[:300],
                                rest.JSONRPC_CODES["method_not_found"])
    if isinstance(endpoint, forceschedulers.ForceSchedulerEndpoint):
        name = str(kwargs.get("schedulername"))
        if name not in force_schedulers:
            return exceptions.InvalidPathError(f"no force scheduler named {name[:100]!r}: it starts nothing; "
                                               f"force schedulers: {', '.join(sorted(force_schedulers))}")
    if not _in_range(params.get("priority")):
        return rest.BadJsonRpc2({"priority": f"must be a whole number from {PRIORITY_RANGE[0]} to "
                                             f"{PRIORITY_RANGE[1]}"}, rest.JSONRPC_CODES["invalid_params"])
    return None


def _in_range(priority: Any) -> bool:
    """Absent, or a whole number (the web form may send it as text) the database can hold."""
    if priority is None or priority == "":
        return True
    if isinstance(priority, str) and priority.isascii() and priority.lstrip("-").isdigit() and len(priority) < 40:
        priority = int(priority)
    if isinstance(priority, bool) or not isinstance(priority, int):
        return True  # not a number: the endpoint's own check names the field
    return PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]


@defer.inlineCallbacks
def _guarded(self: Any, request: Any, method: str, params: dict[str, Any]) -> Generator[Any, Any, Any]:
    ep, kwargs = yield _original(self, request, method, params)
    if request.method == b"POST":  # JSON-RPC; GET/HEAD are REST reads
        from buildbot.schedulers.forcesched import ForceScheduler

        names = {s.name for s in self.master.allSchedulers() if isinstance(s, ForceScheduler)}
        error = refusal(ep, kwargs, method, params or {}, names)
        if error is not None:
            raise error
    return ep, kwargs


def install() -> None:
    """Wrap Buildbot's endpoint lookup (idempotent; every (re)config calls it)."""
    rest.V2RootResource.getEndpoint = _guarded  # type: ignore[method-assign]


def installed() -> bool:
    return rest.V2RootResource.getEndpoint is _guarded
