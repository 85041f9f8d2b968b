"""``python -m workers list|add|check``: manage a master's worker registry.

``add`` appends to the registry of a settings file (``--settings`` or
``$VLLM_CPU_BUILDBOT_SETTINGS``: ``[master] workers_registry`` and
``secrets_dir``) and writes the new worker's password to the secrets
directory (0600), where the master reads it; it prints how that file reaches
the build host without the password ever being on a command line
(``workers/provision.sh`` reads it from ``~/.vllm-cpu-worker-password``
there).  With ``--ec2-*`` options the worker is an EC2 host the master
starts when a build needs it and terminates when idle (``workers/README.md``).
It never writes into this checkout: ``workers/registry.toml`` is the
sandbox's list, so without a settings file, or with a registry or secrets
directory inside the checkout, ``add`` refuses and says which setting to
change.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from farm import settings as settings_mod
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from vllm_cpu_build.helptext import Parser, describe
from workers import launch, registry

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
EPILOG = """\
exit codes:
  0  done (check: no problem found)
  1  check: a worker's secret is missing, empty or not mode 0600
  2  bad input: a malformed registry or settings file, a bad option (an
     incomplete EC2 entry names the option it lacks), or add without a
     settings file / with a target inside the checkout
"""


# [worker.ec2] fields with an --ec2-<field> option of their own (security_group_ids: --ec2-security-group-id).
EC2_OPTIONS = ("region", "ami", "instance_type", "keypair", "master", "security_group", "subnet", "spot",
               "max_spot_price", "price_multiplier", "instance_profile", "endpoint_url")


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
    ec2 = a.add_argument_group(
        "an EC2 host started on demand (any --ec2-* option makes one; see workers/README.md)",
        "The master starts the instance when a build for its arch is queued (its user-data runs "
        "workers/provision.sh with the password from the worker's secret) and terminates it after "
        "--idle-timeout seconds without a build. AWS credentials: boto3's own chain on the master host.")
    ec2.add_argument("--ec2-region", metavar="REGION", help="e.g. us-east-1 (required)")
    ec2.add_argument("--ec2-ami", metavar="AMI", help="a Debian/Ubuntu image of the worker's arch "
                     "(required)")
    ec2.add_argument("--ec2-instance-type", metavar="TYPE", help="e.g. c7g.4xlarge (Graviton3), m7i.4xlarge "
                     "(AMX) (required)")
    ec2.add_argument("--ec2-keypair", metavar="NAME", help="EC2 key pair name (required; created if missing)")
    ec2.add_argument("--ec2-master", metavar="HOST:PORT",
                     help="where the instance reaches the master's worker port (required)")
    ec2.add_argument("--ec2-security-group", metavar="NAME", help="security group name (default VPC)")
    ec2.add_argument("--ec2-subnet", metavar="SUBNET", help="VPC subnet id (then --ec2-security-group-id)")
    ec2.add_argument("--ec2-security-group-id", action="append", metavar="SG", default=None,
                     help="security group id with --ec2-subnet (repeatable)")
    ec2.add_argument("--ec2-spot", action="store_true", help="a spot instance (needs --ec2-max-spot-price)")
    ec2.add_argument("--ec2-max-spot-price", type=float, metavar="USD", help="highest bid per hour")
    ec2.add_argument("--ec2-price-multiplier", type=float, metavar="X",
                     help="bid the 24 h average spot price times X (capped by the maximum); default: bid the maximum")
    ec2.add_argument("--ec2-instance-profile", metavar="NAME", help="IAM instance profile for the instance")
    ec2.add_argument("--ec2-endpoint-url", metavar="URL", help="EC2 API endpoint (default: AWS's for the region)")
    ec2.add_argument("--idle-timeout", type=int, metavar="SECONDS",
                     help=f"stop the host after this long without a build (default {launch.DEFAULT_IDLE_TIMEOUT})")
    ec2.add_argument("--start-timeout", type=int, metavar="SECONDS",
                     help=f"give up on a start after this long (default {launch.EC2_START_TIMEOUT})")
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


def ec2_table(args: argparse.Namespace) -> dict[str, object] | None:
    """The ``[worker.ec2]`` table the ``--ec2-*`` options describe; None when none is given."""
    table = {f: getattr(args, f"ec2_{f}") for f in EC2_OPTIONS if getattr(args, f"ec2_{f}") not in (None, False)}
    if args.ec2_security_group_id:
        table["security_group_ids"] = list(args.ec2_security_group_id)
    for f in ("idle_timeout", "start_timeout"):
        if getattr(args, f) is not None:
            table[f] = getattr(args, f)
    if not table:
        return None
    if not any(k not in ("idle_timeout", "start_timeout") for k in table):
        raise UsageProblem("add: --idle-timeout/--start-timeout are for a host started on demand: give --ec2-*")
    return table


def _option_named(msg: str) -> str:
    """``worker x.ec2.ami: required ...`` -> ``--ec2-ami: required ...``: the error names what to type."""
    m = re.match(r"^worker \S+\.ec2\.(\w+): (.*)$", msg)
    if not m:
        return msg
    field = m.group(1)
    if field in ("idle_timeout", "start_timeout"):
        opt = f"--{field.replace('_', '-')}"
    else:
        opt = "--ec2-security-group-id" if field == "security_group_ids" else f"--ec2-{field.replace('_', '-')}"
    return f"add: {opt}: {m.group(2)}"


def _add(args: argparse.Namespace, reg: Path, secrets: Path, s: settings_mod.Settings) -> None:
    table = ec2_table(args)
    try:
        e, password = registry.add(reg, secrets, args.name, args.arch, args.admin, args.max_builds, args.notes,
                                   launch={"ec2": table} if table else None)
    except registry.RegistryError as exc:
        raise UsageProblem(_option_named(str(exc))) from None
    del password  # only the 0600 file carries it: never printed, never an argument
    secret = secrets / e.secret_name
    print(f"added {e.name} ({e.arch}) to {reg}")
    print(f"secret {secret} written (0600)")
    if isinstance(e.launch, launch.Ec2Launch):
        print(f"an EC2 {e.launch.instance_type} ({e.launch.ami}, {e.launch.region}"
              f"{', spot' if e.launch.spot else ''}) is started when a build for {e.arch} is queued and")
        print(f"terminated {e.launch.idle_timeout}s after its last build; its user-data runs workers/provision.sh")
        print(f"with the password from {secret} and connects to {e.launch.master}.")
        print("the master host needs AWS credentials (an instance role, or ~/.aws of the master's user);")
        print("then reconfigure the master: systemctl reload vllm-cpu-master (or buildbot reconfig <basedir>)")
        return
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
                how = f"  on demand ({e.launch.kind})" if e.launch else ""
                print(f"{e.name:20} {e.arch:8} max_builds={e.max_builds}{how}  {e.admin}  {e.notes}")
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
