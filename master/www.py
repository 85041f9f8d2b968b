"""Web UI, REST API and the change hook."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from buildbot import config
from buildbot.plugins import util
from twisted.python import log

from master.settings import Settings

# Values that look like htpasswd hashes: $apr1$ (MD5), $2y$ (bcrypt), $5$/$6$ (SHA crypt), {SHA}.
_HASHED = re.compile(r"^(\$(apr1|2[abxy]?|1|5|6)\$|\{SHA\})")


def check_users_file(path: Path, admins: tuple[str, ...]) -> list[str]:
    """Problems with the [www] users file; it must exist, be 0600 and hold ``user:password`` lines.

    Buildbot's ``HTPasswdAuth`` is Twisted's ``FilePasswordDB`` without a hash
    function: it compares the password typed with the text after the colon.
    An Apache ``htpasswd`` line would make its hash the password, so it is
    refused, and the file is a secret like the worker passwords.
    """
    try:
        mode = path.stat().st_mode
        lines = path.read_text().splitlines()
    except OSError as exc:
        return [f"www.users_file {path}: cannot read: {exc.strerror}"]
    problems = []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(f"www.users_file {path}: mode {stat.S_IMODE(mode):04o}; it holds passwords, "
                        "make it 0600 (chmod 600)")
    users = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            problems.append(f"www.users_file {path} line {n}: expected user:password")
        elif _HASHED.match(password):
            problems.append(f"www.users_file {path} line {n} ({user}): looks like an htpasswd hash; "
                            "Buildbot compares the plain password, write user:password")
        else:
            users.add(user)
    missing = sorted(set(admins) - users)
    if missing:
        problems.append(f"www.admins: {', '.join(missing)} not in {path}")
    if not admins:
        problems.append("www.admins: nobody could force, stop or rebuild; name at least one user")
    return problems


def make_www(settings: Settings) -> dict:
    www: dict = {
        "port": f"tcp:{settings.master.web_port}:interface={settings.master.web_interface}",
        "plugins": {"waterfall_view": {}, "console_view": {}, "grid_view": {}},
        # POST /change_hook/base with branch=refs/tags/vX announces a tag at once.
        "change_hook_dialects": {"base": True},
    }
    if settings.www.users_file:
        if settings.www.users_file.exists():
            for problem in check_users_file(settings.www.users_file, settings.www.admins):
                config.error(problem)
        else:  # like a missing secret: checkconfig before deployment passes; nobody can log in
            log.msg(f"vllm-cpu: www.users_file {settings.www.users_file} missing; nobody can log in")
        # Production: reading stays public; forcing, stopping and rebuilding
        # need a logged-in admin.
        auth = util.HTPasswdAuth(str(settings.www.users_file))
        www["auth"] = auth
        www["authz"] = util.Authz(
            allowRules=[util.AnyControlEndpointMatcher(role="admins")],
            roleMatchers=[util.RolesFromUsername(roles=["admins"], usernames=list(settings.www.admins))],
        )
        # The change hook takes the same users (HTTP basic auth): a change may
        # carry build properties (postfix, dry_run, variants, ...) that reach
        # the release build, so an anonymous one could publish a .postN.
        www["change_hook_auth"] = auth.checkers
    return www
