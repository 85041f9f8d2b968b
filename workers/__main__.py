"""``python -m workers list|add|check``: manage the worker registry.

``add`` writes the new worker's password to the secrets directory (0600),
where the master reads it, and prints how that file reaches the build host
without the password ever being on a command line (``workers/provision.sh``
reads it from ``~/.vllm-cpu-worker-password`` there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from farm import settings as settings_mod
from vllm_cpu_build.cli import ARCH_CHOICES, arch_arg
from workers import registry


def main(argv: list[str] | None = None) -> int:
    s = settings_mod.load()
    p = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    p.add_argument("--registry", type=Path, default=s.master.workers_registry, help="registry file (from settings)")
    p.add_argument("--secrets-dir", type=Path, default=s.master.secrets_dir, help="secrets directory (from settings)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="show the registered workers")
    a = sub.add_parser("add", help="register a worker and create its password secret")
    a.add_argument("--name", required=True)
    a.add_argument("--arch", required=True, type=arch_arg, help=f"one of {', '.join(ARCH_CHOICES)} (arm64 = aarch64)")
    a.add_argument("--admin", required=True, help="who to contact about this host")
    a.add_argument("--max-builds", type=int, default=1)
    a.add_argument("--notes", default="")
    sub.add_parser("check", help="check the registry and every worker's secret file")
    args = p.parse_args(argv)
    try:
        if args.cmd == "list":
            for e in registry.load(args.registry):
                print(f"{e.name:20} {e.arch:8} max_builds={e.max_builds}  {e.admin}  {e.notes}")
        elif args.cmd == "add":
            e, password = registry.add(args.registry, args.secrets_dir, args.name, args.arch, args.admin,
                                       args.max_builds, args.notes)
            print(f"added {e.name} ({e.arch}) to {args.registry}")
            print(f"secret {args.secrets_dir / e.secret_name} written (0600)")
            del password  # only the 0600 file carries it: never printed, never an argument
            secret = args.secrets_dir / e.secret_name
            print("on the worker host (as the user that runs builds), bring the password file over without")
            print("it touching a command line or your terminal, e.g. over ssh:")
            print(f"  ssh <worker-host> 'umask 077; cat > ~/.vllm-cpu-worker-password' < {secret}")
            print("then provision the host (it checks the CPU, installs, starts and waits until connected):")
            print(f"  WORKER_NAME={e.name} MASTER=<master-host>:{s.master.worker_port} sh workers/provision.sh")
            print("and reconfigure the master: systemctl reload vllm-cpu-master (or buildbot reconfig <basedir>)")
        else:
            problems = registry.check(args.registry, args.secrets_dir)
            for line in problems:
                print(f"problem: {line}")
            n = len(registry.load(args.registry))
            print(f"{n} worker(s), {len(problems)} problem(s)")
            return 1 if problems else 0
    except registry.RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
