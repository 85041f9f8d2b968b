"""A Debian trixie amd64 root with its CPython 3.13, made with ``mmdebstrap`` and cached.

The newest CPython this machine can run (the host has 3.11; bookworm and the
emulated arm64 root too): the tests install a ``cpXY-abi3`` wheel into a venv
of it to prove the wheel serves a newer Python than the one that built it.

    python -m tests.trixie_root     # build or show the cached tarball
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from testbed.debroot import mmdebstrap_tarball
from tests.build_root import CACHE, MIRROR
from tests.build_root import unavailable as _unavailable

SUITE = "trixie"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
OPTIONS = ("--variant=apt", "--arch=amd64", "--dpkgopt=path-exclude=/usr/share/doc/*",
           "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*")


def unavailable() -> str | None:
    """Why no trixie root can be made or used here (None = it can)."""
    return _unavailable()


def tarball(log=print) -> Path:
    key = hashlib.sha256("\n".join([SUITE, *PACKAGES, *OPTIONS]).encode()).hexdigest()[:12]
    return mmdebstrap_tarball(CACHE / f"{SUITE}-python-amd64-{key}.tar",
                              [*OPTIONS, f"--include={','.join(PACKAGES)}"], SUITE, [f"deb {MIRROR} {SUITE} main"],
                              what="about a minute, once", log=log)


if __name__ == "__main__":
    why = unavailable()
    if why:
        sys.exit(f"unavailable: {why}")
    print(tarball())
