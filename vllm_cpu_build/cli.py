"""``vllm-cpu-build``: the worker-side toolchain, one subcommand per build step.

Exit codes (all subcommands):
  0  success
  1  the step ran and failed (a check failed, the build broke, an expected
     upstream anchor is missing); the output names what and why
  2  bad input: usage error, unknown variant, missing file or directory
  3  smoke only: skipped, this host's CPU lacks the variant's ISA

With ``--json`` a subcommand prints one JSON document on stdout; progress and
human-readable detail go to stderr, so Buildbot steps can parse stdout.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vllm_cpu_build.variants import VariantsError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3

# Each module defines register(subparsers) which adds its subcommand and sets
# ``func(args) -> int`` on it.
SUBCOMMANDS = ("plan", "patch", "build", "isa", "verify", "smoke", "upload")


class UsageError(Exception):
    """Bad input: reported as ``error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-cpu-build",
        description="Turn an upstream vLLM source tree into an ISA-checked CPU wheel.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variants-file", help="variants.json to use (default: $VLLM_CPU_VARIANTS or the bundled one)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"vllm_cpu_build.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"vllm_cpu_build.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.variants_file:
        import os

        os.environ["VLLM_CPU_VARIANTS"] = args.variants_file
    try:
        return int(args.func(args))
    except (UsageError, VariantsError, KeyError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"vllm-cpu-build {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    # Run through the package module, not this __main__ copy, so that
    # subcommands raising vllm_cpu_build.cli.UsageError are caught as bad input.
    from vllm_cpu_build.cli import main as _main

    sys.exit(_main())
