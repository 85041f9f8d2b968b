"""``farm.logscan``: the one reader of error lines and compile progress (steps and mail share it)."""

from __future__ import annotations

import pytest

from farm import logscan


@pytest.mark.parametrize(("log", "first"), [
    # GCC after ninja's FAILED line: the compiler's line says why.
    ("[3/9] Building C\nFAILED: CMakeFiles/_C.dir/a.c.o\n/s/a.c:3:2: error: #error broken\n/s/b.c:1:1: error: x\n",
     "/s/a.c:3:2: error: #error broken"),
    ("/s/k.cpp:12:10: fatal error: immintrin_x.h: No such file or directory\n",
     "/s/k.cpp:12:10: fatal error: immintrin_x.h: No such file or directory"),
    # CMake's message is on the line after "CMake Error at ...:".
    ("-- Detecting CXX\nCMake Error at cmake/cpu_extension.cmake:88 (message):\n\n"
     "  X86 backend requires gcc/g++ >= 12.3\n",
     "CMake Error at cmake/cpu_extension.cmake:88 (message): X86 backend requires gcc/g++ >= 12.3"),
    ("/usr/bin/ld: _C.o: in function `f': undefined reference to `numa_available'\n",
     "/usr/bin/ld: _C.o: in function `f': undefined reference to `numa_available'"),
    # pip: the real reason, not its "Failed building wheel" echo.
    ("ERROR: Failed building wheel for x\n"
     "ERROR: Could not find a version that satisfies the requirement torch==2.8.0\n",
     "ERROR: Could not find a version that satisfies the requirement torch==2.8.0"),
    # Nothing but ninja's line: better than nothing.
    ("[1/2] cc\nFAILED: out.o\nninja: build stopped\n", "FAILED: out.o"),
    ("all good\n[100%] Built target _C\n", ""),
])
def test_first_error(log: str, first: str) -> None:
    assert first_error(log) == first


def first_error(log: str) -> str:
    """What the toolchain steps' log observer (``steps.toolchain.LogWatch``) finds: lines fed as they stream."""
    scan = logscan.FirstError()
    for line in log.splitlines():
        scan.feed(line)
    return scan.line


def test_first_error_fits_a_summary_line() -> None:
    line = first_error("/s/a.c:1:1: error: " + "x" * 500 + "\n")
    assert len(line) == logscan.SUMMARY_CHARS and line.endswith("...")


@pytest.mark.parametrize(("line", "seen"), [
    ("[ 45%] Building C object CMakeFiles/_C.dir/a.c.o", "45%"),
    ("[100%] Linking CXX shared module _C.abi3.so", "100%"),
    ("[12/80] Building CXX object CMakeFiles/_C.dir/b.cpp.o", "12/80"),
    ("  [3/9] Linking", "3/9"),
    ("[cmake] something", None),
    ("-- Configuring done (2.1s)", None),
])
def test_progress(line: str, seen: str | None) -> None:
    assert logscan.progress(line) == seen


def test_mail_excerpt_keeps_every_error_kind_in_log_order() -> None:
    log = "a\nFAILED: x.o\n/s/x.c:1:1: error: bad\nERROR: Failed building wheel for v\nlast\n"
    errors, tail = logscan.log_excerpt(log)
    assert errors == ["FAILED: x.o", "/s/x.c:1:1: error: bad"]
    assert tail[-1] == "last"
