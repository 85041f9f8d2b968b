"""Debian root tarballs made once with mmdebstrap and cached.

Every root the tests and the sandbox make goes through here: the emulated
arm64 host (testbed/aarch64_host.py), the build root (tests/build_root.py),
the runtime images' base (sandbox/publish.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

MMDEBSTRAP_TIMEOUT = 1800  # a cold emulated arm64 root took 726 s once on a busy 2-core machine


def mmdebstrap_tarball(path: Path, options: Sequence[str], suite: str, mirrors: Sequence[str] = (), *,
                       what: str = "a few minutes, once", log=print) -> Path:
    """``path``, a Debian root tarball made once by ``mmdebstrap OPTIONS SUITE PATH MIRRORS`` and cached."""
    if path.is_file():
        return path
    if path.is_dir():  # left by a run whose mmdebstrap wrote a directory instead of a tarball
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log(f"creating {path.name} with mmdebstrap ({what})")
    tmp = path.with_suffix(".tar.part")
    # --format: mmdebstrap guesses it from the name, and ".tar.part" would make a directory.
    try:
        r = subprocess.run(["mmdebstrap", "--format=tar", "--quiet", *options, suite, str(tmp), *mirrors],
                           capture_output=True, text=True, check=False, timeout=MMDEBSTRAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap did not finish within {MMDEBSTRAP_TIMEOUT} s") from None
    if r.returncode != 0 or not tmp.is_file():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
    tmp.rename(path)
    log(f"created {path} ({path.stat().st_size >> 20} MiB) in {time.monotonic() - start:.0f} s")
    return path
