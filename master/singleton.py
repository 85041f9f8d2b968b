"""One running master per basedir: a second start refuses before it touches anything.

Measured: ``buildbot start --nodaemon`` (what the systemd unit runs; it
writes no pid file) on a live basedir started a second master on the
same database; it did housekeeping for the live one (the x86_64 builder
lost its workers, a running request was built twice) and exited 0.

``claim(basedir)`` runs while the master loads ``master.cfg``, before
Buildbot opens the database: it takes a POSIX lock on
``<basedir>/master.lock`` that the process holds until it exits (the
kernel drops it then, also after a crash or SIGKILL: no stale lock).  A
second process finds it taken, says which pid holds it and exits with
``EXIT_RUNNING`` at once.  ``checkconfig``, ``upgrade-master`` and the
tests build the configuration too, and take no lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from twisted.python import log

LOCK_NAME = "master.lock"
EXIT_RUNNING = 3  # another master runs on this basedir (documented in master/README.md)
# (lock path, fd) of this process: on the ``sys`` module, because a reconfig re-imports ``master.*``
# and a second lockf() on a new descriptor, closed later, would drop the process's lock.
_HELD = "_vllm_cpu_master_lock"


class AlreadyRunning(RuntimeError):
    """Another process holds ``<basedir>/master.lock``."""


def lock(basedir: str | Path) -> int:
    """Take the basedir's lock for this process (idempotent); AlreadyRunning when another process has it."""
    path = str(Path(basedir).resolve() / LOCK_NAME)
    held = getattr(sys, _HELD, None)
    if held and held[0] == path:
        return int(held[1])
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(f"another master (pid {other}) is running on {Path(basedir).resolve()}: this one "
                             f"stops before touching the database (stop that one first: systemctl stop, or "
                             f"kill {other})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    setattr(sys, _HELD, (path, fd))
    return fd


def starting_master(argv: list[str]) -> bool:
    """Whether this process is a master being started: ``buildbot start`` (with or without
    ``--nodaemon``) runs twistd on the basedir's ``buildbot.tac``; ``checkconfig`` and
    ``upgrade-master`` load master.cfg too, in a reactor, but must take no lock."""
    return "--python=buildbot.tac" in argv


def claim(basedir: str | Path) -> None:
    """In a starting master: take the lock or end this process with EXIT_RUNNING."""
    if not starting_master(sys.argv):
        return  # checkconfig, upgrade-master, tests: no master is starting
    try:
        lock(basedir)
    except AlreadyRunning as exc:
        msg = f"vllm-cpu: refusing to start: {exc}"
        log.msg(msg)  # twistd.log
        os.write(2, (msg + "\n").encode())  # the console or journal: twistd has replaced sys.stderr
        os._exit(EXIT_RUNNING)  # nothing to clean up yet; reactor.stop() would exit 0
