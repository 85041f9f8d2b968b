"""``python -m master.systemd``: the master's systemd unit, written for this host's paths.

    python -m master.systemd --settings /srv/vllm-cpu/settings.toml --basedir /srv/vllm-cpu/master \\
        --user buildbot > /etc/systemd/system/vllm-cpu-master.service

The unit runs ``buildbot start --nodaemon`` from this venv (systemd supervises
the process itself: no pid file, ``Restart=on-failure``), with the settings
file in ``$VLLM_CPU_BUILDBOT_SETTINGS`` (the secrets directory is named
there) and this venv first on ``PATH`` (the in-process workers run the
toolchain with ``python3``).  ``systemctl reload`` sends SIGHUP, which is
what ``buildbot reconfig`` does; ``buildbot reconfig`` itself needs the pid
file a systemd-run master does not write.

Exit codes: 0 unit printed, 2 bad arguments (the message names the option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from master.settings import ENV_VAR


def _quote(value: str, exec_line: bool = False) -> str:
    """One word of Environment= or (``exec_line``) ExecStart=: specifiers escaped, quoted if needed."""
    value = value.replace("%", "%%")
    if exec_line:  # ExecStart= also expands $VAR
        value = value.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\" for c in value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _path(value: str) -> str:
    """A path setting (WorkingDirectory=) is taken as it is, spaces and all; only specifiers need escaping."""
    return value.replace("%", "%%")


def master_unit(settings: Path, basedir: Path, user: str, bin_dir: Path, after: tuple[str, ...] = ()) -> str:
    """The text of the master's unit; ``after``: services it needs first (e.g. postgresql.service)."""
    buildbot = bin_dir / "buildbot"
    after_line = " ".join(("network-online.target", *after))
    return f"""\
# Written by `python -m master.systemd` (vllm-cpu-buildbot); see master/README.md "Production".
[Unit]
Description=vllm-cpu Buildbot master ({basedir})
Documentation=https://docs.buildbot.net/
After={after_line}
Wants=network-online.target

[Service]
Type=simple
User={user}
WorkingDirectory={_path(str(basedir))}
Environment={_quote(f"{ENV_VAR}={settings}")}
Environment={_quote(f"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin")}
Environment=PYTHONUNBUFFERED=1
ExecStart={_quote(str(buildbot), True)} start --nodaemon {_quote(str(basedir), True)}
# buildbot reconfig = SIGHUP to the master
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=10
# A master being stopped finishes writing its state; builds in progress are interrupted.
TimeoutStopSec=120
# Secrets and the database password stay private to the service user.
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m master.systemd", description=__doc__.split("\n\n")[0],
                                epilog="Exit codes: 0 unit printed, 2 bad arguments.")
    p.add_argument("--settings", type=Path, required=True, help="the settings file (absolute path)")
    p.add_argument("--basedir", type=Path, required=True, help="the master's basedir (buildbot create-master)")
    p.add_argument("--user", required=True, help="the system user the master runs as")
    p.add_argument("--after", action="append", default=[], metavar="UNIT",
                   help="a unit to start first, e.g. postgresql.service (repeatable)")
    args = p.parse_args(argv)
    for opt, path in (("--settings", args.settings), ("--basedir", args.basedir)):
        if not path.is_absolute():
            p.error(f"{opt}: must be an absolute path, got {path}")
    if not args.settings.is_file():
        p.error(f"--settings: {args.settings} is not a file")
    if not (args.basedir / "buildbot.tac").is_file():
        p.error(f"--basedir: {args.basedir} has no buildbot.tac (run buildbot create-master first)")
    # The venv this module runs from is the one that has Buildbot and the project's dependencies.
    sys.stdout.write(master_unit(args.settings, args.basedir, args.user, Path(sys.executable).parent,
                                 tuple(args.after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
