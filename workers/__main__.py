"""``python -m workers list|add|check``: manage a master's worker registry.

``add`` appends to the registry of a settings file (``--settings`` or
``$VLLM_CPU_BUILDBOT_SETTINGS``: ``[master] workers_registry`` and
``secrets_dir``) and writes the new worker's password to the secrets
directory (0600), where the master reads it; it prints how that file reaches
the build host without the password ever being on a command line
(``workers/provision.sh`` reads it from ``~/.vllm-cpu-worker-password``
there).  It never writes into this checkout: ``workers/registry.toml`` is
the sandbox's list, so without a settings file, or with a registry or
secrets directory inside the checkout, ``add`` refuses and says which
setting to change.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from farm import settings as settings_mod
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from vllm_cpu_build.helptext import Parser, describe
from workers import registry

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
EPILOG = """\
exit codes:
  0  done (check: no problem found)
  1  check: a worker's secret is missing, empty or not mode 0600
  2  bad input: a malformed registry or settings file, a bad option, or add
     without a settings file / with a target inside the checkout
"""


class UsageProblem(Exception):
    """Bad input; the message names the option or setting."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m workers", description=describe(__doc__) + "\n\n" + describe(__doc__, paragraph=1),
               epilog=EPILOG)
    p.add_argument("--settings", type=Path, metavar="FILE",
                   help=f"the master's settings file (default: ${settings_mod.ENV_VAR}); add needs one")
    p.add_argument("--registry", type=Path, metavar="FILE",
                   help="the registry file (default: [master] workers_registry of the settings)")
    p.add_argument("--secrets-dir", type=Path, metavar="DIR",
                   help="the secrets directory (default: [master] secrets_dir of the settings)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("list", help="show the registered workers")
    a = sub.add_parser("add", help="register a worker and create its password secret")
    a.add_argument("--name", required=True, help="lowercase letters, digits and '-'")
    a.add_argument("--arch", required=True, type=arch_arg, help=f"one of {', '.join(ARCH_CHOICES)} (arm64 = aarch64)")
    a.add_argument("--admin", required=True, help="who to contact about this host")
    a.add_argument("--max-builds", type=int, default=1, help="builds at once on this host (default 1)")
    a.add_argument("--notes", default="", help="free text shown with the worker")
    sub.add_parser("check", help="check the registry and every worker's secret file")
    return p


def _inside_checkout(path: Path) -> bool:
    return path.resolve().is_relative_to(settings_mod.REPO_ROOT)


def targets(args: argparse.Namespace, writing: bool) -> tuple[Path, Path, settings_mod.Settings]:
    """(registry, secrets directory, settings) the command works on; ``writing``: for ``add``."""
    chosen = args.settings or os.environ.get(settings_mod.ENV_VAR)
    s = settings_mod.load(chosen)  # no file: the sandbox's defaults (reading them is harmless)
    reg, secrets = args.registry or s.master.workers_registry, args.secrets_dir or s.master.secrets_dir
    if not writing:
        return reg, secrets, s
    if not chosen and not (args.registry and args.secrets_dir):
        raise UsageProblem(
            f"add: no settings file: pass --settings FILE or set ${settings_mod.ENV_VAR} (a copy of "
            "master/settings.example.toml); its [master] workers_registry and secrets_dir say where the worker "
            "goes. Without one the registry would be this checkout's sandbox list workers/registry.toml, "
            "which add never edits")
    for what, path, option in (("[master] workers_registry", reg, "--registry"),
                               ("[master] secrets_dir", secrets, "--secrets-dir")):
        if _inside_checkout(path):
            raise UsageProblem(f"add: {option} / {what} {path} is inside the checkout {settings_mod.REPO_ROOT}; "
                               f"add never writes there: point {what} of the settings file (or {option}) at "
                               "the master's own directory, e.g. /srv/vllm-cpu")
    return reg, secrets, s


def _add(args: argparse.Namespace, reg: Path, secrets: Path, s: settings_mod.Settings) -> None:
    e, password = registry.add(reg, secrets, args.name, args.arch, args.admin, args.max_builds, args.notes)
    del password  # only the 0600 file carries it: never printed, never an argument
    secret = secrets / e.secret_name
    print(f"added {e.name} ({e.arch}) to {reg}")
    print(f"secret {secret} written (0600)")
    print("on the worker host (as the user that runs builds), bring the password file over without")
    print("it touching a command line or your terminal, e.g. over ssh:")
    print(f"  ssh <worker-host> 'umask 077; cat > ~/.vllm-cpu-worker-password' < {secret}")
    print("then provision the host (it checks the CPU, installs, starts and waits until connected):")
    print(f"  WORKER_NAME={e.name} MASTER=<master-host>:{s.master.worker_port} sh workers/provision.sh")
    print("and reconfigure the master: systemctl reload vllm-cpu-master (or buildbot reconfig <basedir>)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        reg, secrets, s = targets(args, writing=args.cmd == "add")
        if args.cmd == "list":
            for e in registry.load(reg):
                print(f"{e.name:20} {e.arch:8} max_builds={e.max_builds}  {e.admin}  {e.notes}")
        elif args.cmd == "add":
            _add(args, reg, secrets, s)
        else:
            problems = registry.check(reg, secrets)
            for line in problems:
                print(f"problem: {line}")
            print(f"{len(registry.load(reg))} worker(s), {len(problems)} problem(s)")
            return EXIT_PROBLEMS if problems else EXIT_OK
    except (registry.RegistryError, settings_mod.SettingsError, UsageProblem) as exc:
        print(f"python -m workers: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
