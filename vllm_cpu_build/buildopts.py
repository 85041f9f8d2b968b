"""The options of one ``build``: the command line's (``from_args``) or a caller's, checked once.

Kept apart from ``build.py`` (the phases) so that each stays readable;
``vllm_cpu_build.build.BuildOptions`` is this class.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vllm_cpu_build import fetchcontent
from vllm_cpu_build.enums import Arch, BuildEnvKind
from vllm_cpu_build.errors import UsageError
from vllm_cpu_build.variants import Variant, load


@dataclass(frozen=True)
class BuildOptions:
    """Everything one build takes: the CLI's options (``from_args``) or a caller's, checked once here."""

    variant: Variant
    src: Path  # the tree `vllm-cpu-build patch` made
    out: Path  # directory for the wheel and its record
    python: str | None = None  # "3.X" or an interpreter; None: this one (in a build root: its python3)
    arch: Arch | None = None  # None: the arch the tree is patched for
    max_jobs: int | None = None  # MAX_JOBS; None: the CPUs this process may use
    build_env: BuildEnvKind = BuildEnvKind.MANAGED
    torch_index: str | None = None  # None: variants.json torch_index_url; "": none
    torch: str | None = None  # TEST ONLY: install this torch instead of the wheel's pin
    allow_torch_mismatch: bool = False  # TEST ONLY: build although torch is not the pin (verify fails it)
    fetch_source: Mapping[str, Path] = field(default_factory=dict)  # FetchContent name -> local tree
    fetch_mirror: Path | None = None  # <mirror>/<name>/<ref> for every FetchContent dependency
    cmake_args: tuple[str, ...] = ()
    root: str | None = None  # build root: a directory or tarball (buildroot.py)
    root_bind: tuple[Path, ...] = ()  # host paths visible read-only in the root
    strip: bool = True  # strip debug info from vLLM's modules
    debug_archive: bool = False  # keep it as <wheel>.debug.tar.gz
    sdist: Path | None = None  # the sdist the tree came from (named in the record)
    # None: the tree's git commit time, else the worker's SOURCE_DATE_EPOCH (reproducible.py).
    source_date_epoch: int | None = None
    log: TextIO | None = field(default=None, compare=False)  # progress; None: stderr

    def __post_init__(self) -> None:
        # Paths absolute: pip runs in another directory and writes the wheel there.
        object.__setattr__(self, "src", Path(self.src).resolve())
        object.__setattr__(self, "out", Path(self.out).resolve())
        try:
            object.__setattr__(self, "build_env", BuildEnvKind(self.build_env))
        except ValueError:
            raise UsageError(f"--build-env {self.build_env!r}: managed or interpreter") from None
        if self.source_date_epoch is not None and self.source_date_epoch < 0:
            raise UsageError(f"--source-date-epoch {self.source_date_epoch}: before 1970")
        if self.torch and self.build_env is not BuildEnvKind.MANAGED:
            raise UsageError("--torch chooses what the managed build env installs; with --build-env interpreter "
                             "the interpreter's own torch is checked")

    @property
    def out_log(self) -> TextIO:
        return self.log or sys.stderr

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BuildOptions:
        src = Path(args.src).resolve()
        if not src.is_dir():
            raise UsageError(f"--src {src}: not a directory")
        variant = load().get(args.variant)
        sdist = Path(args.sdist).resolve() if args.sdist else None
        if sdist is not None and not sdist.is_file():
            raise UsageError(f"--sdist {sdist}: no such file")
        return cls(variant, src, Path(args.out), python=args.python, arch=args.arch, max_jobs=args.max_jobs,
                   build_env=args.build_env, torch_index=args.torch_index_url, torch=args.torch,
                   allow_torch_mismatch=args.allow_torch_mismatch,
                   fetch_source=fetchcontent.parse_source_option(args.fetch_source),
                   fetch_mirror=Path(args.fetch_mirror).expanduser().resolve() if args.fetch_mirror else None,
                   cmake_args=tuple(args.cmake_arg), root=args.root, root_bind=tuple(Path(b) for b in args.root_bind),
                   strip=args.strip, debug_archive=args.debug_archive, sdist=sdist,
                   source_date_epoch=args.source_date_epoch,
                   log=sys.stderr if args.json else sys.stdout)
