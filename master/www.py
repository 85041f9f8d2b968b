"""Web UI, REST API and the change hook."""

from __future__ import annotations

from buildbot.plugins import util

from master.settings import Settings


def make_www(settings: Settings) -> dict:
    www: dict = {
        "port": f"tcp:{settings.web_port}:interface={settings.web_interface}",
        "plugins": {"waterfall_view": {}, "console_view": {}, "grid_view": {}},
        # POST /change_hook/base with branch=refs/tags/vX announces a tag at once.
        "change_hook_dialects": {"base": True},
    }
    if settings.users_file:
        # Production: log in to force, stop or rebuild; reading stays public.
        # (The change hook stays open: it can only announce tags that exist
        # upstream, and published wheels are never rebuilt.)
        www["auth"] = util.HTPasswdAuth(str(settings.users_file))
        www["authz"] = util.Authz(
            allowRules=[util.AnyControlEndpointMatcher(role="admins")],
            roleMatchers=[util.RolesFromUsername(roles=["admins"], usernames=list(settings.admins))],
        )
    return www
