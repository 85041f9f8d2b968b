"""``ship_toolchain``: the master's toolchain on the worker, transferred once per worker and revision.

The tarball's name carries its hash (``master/toolchain.py``).  A worker
keeps the tarballs it was sent in ``.vllm-cpu-toolchain/`` next to its
builder directories; a build whose tarball is there, with the sha256 the
master computed, only unpacks it (one remote command); otherwise the
master sends it (one file transfer) and the same command runs again.  Every
build still unpacks a fresh ``tc/`` from checked bytes: a build never runs
a toolchain another build may have changed.  ``bootstrap.py`` then picks
the interpreter (``toolchain_python``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

from buildbot.process import buildstep
from buildbot.steps.worker import CompositeStepMixin
from twisted.internet import defer

from farm.states import FAILURE, SUCCESS

CACHE_DIR = "../.vllm-cpu-toolchain"  # relative to the builder directory: one cache per worker
SENT = "toolchain.tar.gz"  # where the master sends a tarball the cache lacks
NOT_CACHED = 42  # the script's exit code: send the tarball, then run it again
KEEP_DAYS = 14  # a cached tarball nobody used for that long goes


class ShipToolchain(CompositeStepMixin, buildstep.ShellMixin, buildstep.BuildStep):
    """Unpack the master's toolchain tarball into ``tc/`` from the worker's cache (sent when missing)."""

    name = "ship_toolchain"
    # $0 the worker's python, $1 the cached tarball, $2 its sha256.  A tarball that was just
    # sent is checked and moved into the cache (atomically: builds may run side by side).
    SCRIPT = """set -e
ok() { printf '%s  %s\\n' "$2" "$1" | sha256sum -c --status 2>/dev/null; }
if ! ok "$1" "$2"; then
  ok """ + SENT + """ "$2" || { rm -f """ + SENT + """; exit """ + str(NOT_CACHED) + """; }
  mkdir -p "$(dirname "$1")" && mv """ + SENT + """ "$1.$$" && mv -f "$1.$$" "$1"
  find "$(dirname "$1")" -name 'toolchain-*.tar.gz' -mtime +""" + str(KEEP_DAYS) + """ -delete || true
  echo sent >&2
fi
touch "$1"
rm -rf tc out && mkdir tc out && tar -xzf "$1" -C tc
exec "$0" tc/vllm_cpu_build/bootstrap.py"""

    def __init__(self, tarball: Path, **kwargs: Any) -> None:
        kwargs.setdefault("logEnviron", False)
        kwargs.setdefault("workdir", ".")
        kwargs.setdefault("haltOnFailure", True)
        kwargs = self.setupShellMixin(kwargs, prohibitArgs=["command"])
        super().__init__(**kwargs)
        self.tarball = tarball
        self.sha256 = hashlib.sha256(tarball.read_bytes()).hexdigest() if tarball.is_file() else ""

    @defer.inlineCallbacks
    def _unpack(self, python: str) -> Generator[Any, Any, Any]:
        cached = f"{CACHE_DIR}/{self.tarball.name}"
        cmd = yield self.makeRemoteShellCommand(command=["sh", "-c", self.SCRIPT, python, cached, self.sha256],
                                                collectStdout=True)
        yield self.runCommand(cmd)
        return cmd

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, int]:
        python = self.getProperty("worker_python") or "python3"
        cmd = yield self._unpack(python)
        how = "cached"
        if cmd.rc == NOT_CACHED:
            sent = yield self.downloadFileContentToWorker(SENT, self.tarball.read_bytes(), mode=0o600)
            if sent is None:
                self.descriptionDone = f"could not send {self.tarball.name}"
                return FAILURE
            cmd = yield self._unpack(python)
            how = "sent"
        lines = (cmd.stdout or "").strip().splitlines()
        if cmd.rc != 0 or not lines:
            self.descriptionDone = f"toolchain unpack/bootstrap failed (exit {cmd.rc})"
            return FAILURE
        self.setProperty("toolchain_python", lines[-1].strip(), "toolchain")
        self.descriptionDone = f"{self.tarball.name} ({how}) with {lines[-1].strip()}"
        return SUCCESS
