"""A build root made here: Debian bookworm with GCC 14 from trixie, as a root tarball.

What ``vllm-cpu-build build --root`` runs in during the tests: the same kind
of thing as production's manylinux_2_28 + gcc-toolset-14 tarball (a root file
system whose compiler differs from the host's), made with ``mmdebstrap``
(Debian's mirror through apt, like testbed/aarch64_host.py) because no
container registry is reachable here.  bookworm's CPython 3.11 stays (the
only CPU torch this machine has is for 3.11); ``gcc-14``/``g++-14`` come
from trixie (with trixie's libc6 and libstdc++6) and are the root's ``cc``,
``c++``, ``gcc``, ``g++``: GCC >= 12.3, which vLLM 0.17+ requires on x86_64
and Debian 12's GCC 12.2 is not.

Cached as ``~/.cache/vllm-cpu-buildbot/build-roots/<name>-<hash>.tar``
(hash of the recipe); ~2-3 minutes once.

    python -m tests.build_root     # build or show the cached tarball
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from testbed.debroot import mmdebstrap_tarball

SUITE = "bookworm"
EXTRA_SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-dev", "make", "libnuma-dev", "ca-certificates", "ccache")
FROM_EXTRA = ("gcc-14", "g++-14")
CACHE = Path(os.environ.get("VLLM_CPU_CACHE") or Path.home() / ".cache" / "vllm-cpu-buildbot") / "build-roots"
HOOK = """#!/bin/sh
set -e
chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t {extra} {pkgs}
for t in gcc cc; do ln -sf /usr/bin/gcc-14 "$1/usr/local/bin/$t"; done
for t in g++ c++; do ln -sf /usr/bin/g++-14 "$1/usr/local/bin/$t"; done
chroot "$1" apt-get clean
"""


def _key() -> str:
    recipe = "\n".join([SUITE, EXTRA_SUITE, *PACKAGES, *FROM_EXTRA, HOOK])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def unavailable() -> str | None:
    """Why no build root can be made or used here (None = it can)."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "the test root is an amd64 Debian root"
    if os.geteuid() != 0:
        return "mmdebstrap needs root here (chroot for the apt hook)"
    for tool in ("mmdebstrap", "bwrap"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Makefile APT_PACKAGES)"
    return None


def tarball(log=print) -> Path:
    """The cached root tarball, made with mmdebstrap on first use."""
    with tempfile.TemporaryDirectory(prefix="root-hook-") as tmp:
        hook = Path(tmp) / "hook.sh"
        hook.write_text(HOOK.format(extra=EXTRA_SUITE, pkgs=" ".join(FROM_EXTRA)))
        hook.chmod(0o755)
        return mmdebstrap_tarball(
            CACHE / f"{SUITE}-gcc14-amd64-{_key()}.tar",
            ["--variant=apt", "--arch=amd64", f'--aptopt=APT::Default-Release "{SUITE}"',
             f"--include={','.join(PACKAGES)}", f'--customize-hook={hook} "$1"',
             "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
             "--dpkgopt=path-exclude=/usr/share/locale/*"],
            SUITE, [f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {EXTRA_SUITE} main"], log=log)


if __name__ == "__main__":
    why = unavailable()
    if why:
        sys.exit(f"unavailable: {why}")
    print(tarball())
