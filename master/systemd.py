"""``python -m master.systemd``: the master's systemd unit, written for this host's paths.

    python -m master.systemd --settings /srv/vllm-cpu/settings.toml --basedir /srv/vllm-cpu/master \\
        --user buildbot > /etc/systemd/system/vllm-cpu-master.service
    python -m master.systemd --router-dir /srv/vllm-cpu/router \\
        --crossbar /srv/vllm-cpu/crossbar/bin/crossbar --user buildbot > /etc/systemd/system/vllm-cpu-router.service

The unit runs ``buildbot start --nodaemon`` from this venv (systemd supervises
the process itself: no pid file, ``Restart=on-failure``), with the settings
file in ``$VLLM_CPU_BUILDBOT_SETTINGS`` (the secrets directory is named
there) and this venv first on ``PATH`` (the in-process workers run the
toolchain with ``python3``).  ``systemctl reload`` sends SIGHUP, which is
what ``buildbot reconfig`` does; ``buildbot reconfig`` itself needs the pid
file a systemd-run master does not write.  ``--router-dir`` writes instead the
unit of the crossbar WAMP router that several masters share (multi-master).
``cache_unit`` is the shared compile cache's Redis unit (``python -m master.cache_server``).

Exit codes: 0 unit printed, 2 bad arguments (the message names the option).
"""

from __future__ import annotations

import sys
from pathlib import Path

from farm.settings import ENV_VAR
from vllm_cpu_build.helptext import Parser, describe


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
# Exit 3: another master holds this basedir (master/singleton.py); restarting would not help.
RestartPreventExitStatus=3
# A master being stopped finishes writing its state; builds in progress are interrupted.
TimeoutStopSec=120
# Secrets and the database password stay private to the service user.
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def router_unit(cbdir: Path, user: str, crossbar: Path) -> str:
    """The WAMP router of multi-master mode: ``crossbar start`` on ``cbdir/config.json``."""
    return f"""\
# Written by `python -m master.systemd --router-dir` (vllm-cpu-buildbot); see master/README.md "Scale-out".
[Unit]
Description=vllm-cpu WAMP router for Buildbot multi-master (crossbar, {cbdir})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
WorkingDirectory={_path(str(cbdir))}
ExecStart={_quote(str(crossbar), True)} start --cbdir {_quote(str(cbdir), True)}
Restart=on-failure
RestartSec=5
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


CACHE_STATE_DIR = "vllm-cpu-ccache"  # /var/lib/<this>: the compile cache's StateDirectory=, its dir


def cache_unit(config: Path, redis_server: str = "/usr/bin/redis-server", user: str = "redis") -> str:
    """The unit running ``redis-server CONFIG`` supervised by systemd (Type=notify, as Debian's own)."""
    return f"""\
# Written by `python -m master.cache_server` (vllm-cpu-buildbot); see master/README.md "Shared compile cache".
[Unit]
Description=vllm-cpu shared compile cache (Redis for ccache remote storage, {config})
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
User={user}
Group={user}
ExecStart={_quote(redis_server, True)} {_quote(str(config), True)} --supervised systemd --daemonize no
Restart=always
RestartSec=5
StateDirectory={CACHE_STATE_DIR}
StateDirectoryMode=0700
WorkingDirectory={_path("/var/lib/" + CACHE_STATE_DIR)}
LimitNOFILE=65535
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectHome=yes

[Install]
WantedBy=multi-user.target
"""


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m master.systemd", description=describe(__doc__),
                                epilog="Exit codes: 0 unit printed, 2 bad arguments.")
    p.add_argument("--settings", type=Path, help="the settings file (absolute path)")
    p.add_argument("--basedir", type=Path, help="the master's basedir (buildbot create-master)")
    p.add_argument("--user", required=True, help="the system user the service runs as")
    p.add_argument("--after", action="append", default=[], metavar="UNIT",
                   help="a unit to start first, e.g. postgresql.service (repeatable)")
    p.add_argument("--router-dir", type=Path, metavar="CBDIR",
                   help="instead of a master: the crossbar router's unit for CBDIR/config.json")
    p.add_argument("--crossbar", type=Path, help="with --router-dir: the crossbar program (its own venv)")
    args = p.parse_args(argv)
    if args.router_dir:
        if not args.router_dir.is_absolute() or not (args.router_dir / "config.json").is_file():
            p.error(f"--router-dir: {args.router_dir} must be an absolute path holding config.json")
        if not args.crossbar or not args.crossbar.is_absolute():
            p.error("--crossbar: the absolute path of the crossbar program is required with --router-dir")
        sys.stdout.write(router_unit(args.router_dir, args.user, args.crossbar))
        return 0
    for opt, path in (("--settings", args.settings), ("--basedir", args.basedir)):
        if path is None:
            p.error(f"{opt}: required for a master's unit")
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
