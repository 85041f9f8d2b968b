"""The shared compile cache in a build step's environment (``[cache]``, ``farm/compile_cache.py``).

``remote_env`` gives the ``CCACHE_REMOTE_STORAGE`` a build step runs with:
the settings' Redis URL with the password rendered from its Buildbot secret
through ``Interpolate("%(secret:NAME)s")``, which registers the value with
the build, so Buildbot writes ``<NAME>`` wherever it would show (logs, a
logged environment, summaries).  A cache is a speed-up, never a reason to
fail: a missing or unusable secret gives no remote storage and a warning
that the step puts in its log and summary.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from buildbot.process.properties import Interpolate
from twisted.internet import defer

from farm.compile_cache import Cache
from vllm_cpu_build.compile_cache import REMOTE_ENV

_PLACEHOLDER = "PASSWORD"  # stands for the secret while the URL is made (URL-safe, as url() wants)


@dataclass(frozen=True)
class RemoteEnv:
    env: dict[str, str]  # {CCACHE_REMOTE_STORAGE: ...} or {}
    warning: str = ""  # why the remote is off although [cache] names one


@defer.inlineCallbacks
def remote_env(cache: Cache | None, build: Any, master: Any) -> Generator[Any, Any, RemoteEnv]:
    """The environment that hands ``cache``'s remote storage to the running ``build``."""
    storage = cache.storage() if cache else None
    if cache is None or storage is None:
        return RemoteEnv({})
    if not cache.password_secret:
        return RemoteEnv({REMOTE_ENV: storage.url()})
    name = cache.password_secret
    off = "remote compile cache off: secret {!r} {}; building with the local cache only"
    secrets = master.namedServices.get("secrets")
    detail = (yield secrets.get(name)) if secrets else None
    if detail is None or not detail.value:
        return RemoteEnv({}, off.format(name, "not found"))
    try:
        storage.url(detail.value)
    except ValueError as exc:
        return RemoteEnv({}, off.format(name, f"unusable: {exc}"))
    # '%' in ccache's attributes must not start an interpolation.
    template = storage.url(_PLACEHOLDER).replace("%", "%%").replace(
        f"//{_PLACEHOLDER}@", f"//%(secret:{name})s@", 1)
    url = yield build.render(Interpolate(template))
    return RemoteEnv({REMOTE_ENV: url})
