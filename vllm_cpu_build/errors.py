"""Exit codes and the one error type of ``vllm-cpu-build``.

Every subcommand raises a ``ToolchainError`` (or a subclass) for anything
that stops it; ``cli.main`` catches it once, prints the message (and with
``--json`` an ``ErrorResult``) and exits with the error's code.

Exit codes (all subcommands):
  0  success
  1  the step ran and failed (a check failed, the build broke, an expected
     upstream anchor is missing); the output names what and why
  2  bad input: usage error, unknown variant, missing file or directory,
     a missing prerequisite named up front
  3  skipped: smoke, this host's CPU lacks the variant's ISA; image, the
     index has no wheel of that version to build from
"""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


class ToolchainError(Exception):
    """A subcommand stopped; ``exit_code`` says how, ``detail`` goes into the JSON error document."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(ToolchainError):
    """Bad input (exit 2): the message names the option or file and what is allowed."""

    exit_code = EXIT_USAGE


class StepFailed(ToolchainError):
    """The step ran and failed (exit 1): compiler, CMake, pip, an upstream anchor, twine."""

    exit_code = EXIT_FAIL


class BuildFailed(StepFailed):
    """The build ran and failed (compiler, CMake, pip, a finishing tool)."""
