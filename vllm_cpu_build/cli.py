"""``vllm-cpu-build``: the worker-side toolchain, one subcommand per build step.

With ``--json`` a subcommand prints one JSON document on stdout (its typed
result from ``vllm_cpu_build.results``, or an ``error`` document); progress
and human-readable detail go to stderr, so Buildbot steps can parse stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from vllm_cpu_build import errors, specs
from vllm_cpu_build.enums import Arch
from vllm_cpu_build.errors import EXIT_OK, EXIT_USAGE, ToolchainError, UsageError
from vllm_cpu_build.helptext import Parser
from vllm_cpu_build.results import ErrorResult, Result

__all__ = ["ARCH_CHOICES", "SUBCOMMANDS", "UsageError", "arch_arg", "build_parser", "main", "version_arg"]

# Each module defines register(subparsers) which adds its subcommand and sets
# ``func(args) -> Result`` on it.
SUBCOMMANDS = ("plan", "patch", "build", "isa", "verify", "smoke", "upload", "image", "compare")

ARCH_CHOICES = tuple(specs.ARCH_ALIASES)  # x86_64, aarch64, arm64 (= aarch64)


def arch_arg(value: str) -> Arch:
    """argparse type for ``--arch``: the canonical name of ``value``."""
    try:
        return specs.parse_arch(value)
    except specs.SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arches_arg(value: str) -> list[Arch]:
    """argparse type for ``--arches``: a comma-separated list of arches, canonical and de-duplicated."""
    try:
        return specs.parse_arches(value)
    except specs.SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def version_arg(value: str) -> str:
    """argparse type for every option naming a vLLM version: ``specs.normalize_version`` (0.12 -> 0.12.0)."""
    try:
        return specs.normalize_version(value.strip())
    except specs.SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vllm-cpu-build",
        description="Turn an upstream vLLM source tree into an ISA-checked CPU wheel.",
        # The exit codes are documented once, in vllm_cpu_build.errors.
        epilog=(__doc__ or "").split("\n\n")[1] + "\n\n" + errors.__doc__.split("\n\n")[2],
    )
    parser.add_argument("--variants-file", help="variants.json to use (default: $VLLM_CPU_VARIANTS or the bundled one)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"vllm_cpu_build.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    if args.variants_file:
        os.environ["VLLM_CPU_VARIANTS"] = args.variants_file
    try:
        result: Result = args.func(args)
    except ToolchainError as exc:
        # The one place a stopped subcommand is reported: a line on stderr, and the
        # error document on stdout for the master.
        label = "error" if exc.exit_code == EXIT_USAGE else "FAILED"
        print(f"vllm-cpu-build {args.command}: {label}: {exc.message}", file=sys.stderr)
        if getattr(args, "json", False):
            doc = ErrorResult(args.command, exc.message, exc.exit_code, dict(exc.detail))
            print(json.dumps(doc.to_json(), indent=2))
        return exc.exit_code
    if getattr(args, "json", False):
        print(json.dumps(result.to_json(), indent=2))
    return result.exit_code if result is not None else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
