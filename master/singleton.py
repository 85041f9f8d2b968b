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

from farm import handover
from farm.settings import Master

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


def name_in_use(master: Master, basedir: str | Path, fresh: float = 180.0) -> str | None:
    """On a shared database (multi-master): the Buildbot name of another live master whose in-process
    workers carry ``[master] name`` (``<name>-local-N``), or None.

    Two masters with one name would fight over those workers (a worker
    connects to one master at a time).  "Live": active, and seen within
    ``fresh`` seconds (Buildbot refreshes ``last_active`` every minute), so a
    crashed master's leftover row does not block its replacement.
    """
    import socket
    import time

    from sqlalchemy import create_engine, text

    from master.workers import local_worker_names

    own = f"{socket.getfqdn()}:{os.path.abspath(basedir)}"  # Buildbot's name for this master
    args: dict[str, str] = {}
    if master.db_password_secret:
        args["password"] = (master.secrets_dir / master.db_password_secret).read_text().strip()
    engine = create_engine(master.db_url, connect_args=args)
    names = local_worker_names(master.local_workers, master.name)
    query = text("SELECT m.name FROM masters m JOIN connected_workers c ON c.masterid = m.id "
                 "JOIN workers w ON w.id = c.workerid "
                 "WHERE m.active = 1 AND m.last_active > :since AND m.name != :own AND w.name = :worker")
    try:
        with engine.connect() as conn:
            for worker in names:
                row = conn.execute(query, {"since": int(time.time() - fresh), "own": own, "worker": worker}).first()
                if row:
                    return str(row[0])
    finally:
        engine.dispose()
    return None


def claim(basedir: str | Path, master: Master | None = None) -> None:
    """In a starting master: take the basedir lock, and on a shared database make sure no live master
    has this ``[master] name``; otherwise end this process with EXIT_RUNNING."""
    if not starting_master(sys.argv):
        return  # checkconfig, upgrade-master, tests: no master is starting
    try:
        first = getattr(sys, _HELD, None) is None  # not a reconfig of this process
        lock(basedir)
        if first:
            _sweep_custody(basedir)
        if master is not None and master.mq_router_url:
            other = _name_in_use_or_none(master, basedir)
            if other:
                raise AlreadyRunning(f"[master] name {master.name!r} is in use by the live master {other} on the "
                                     "shared database: give this master another name")
    except AlreadyRunning as exc:
        msg = f"vllm-cpu: refusing to start: {exc}"
        log.msg(msg)  # twistd.log
        os.write(2, (msg + "\n").encode())  # the console or journal: twistd has replaced sys.stderr
        os._exit(EXIT_RUNNING)  # nothing to clean up yet; reactor.stop() would exit 0


def _sweep_custody(basedir: str | Path) -> None:
    """Wheels a stopped build fetched but never published: this process runs no build yet."""
    gone = handover.sweep(basedir)
    if gone:
        log.msg(f"vllm-cpu: removed {len(gone)} custody director{'y' if len(gone) == 1 else 'ies'} left by "
                f"builds the last master stopped before publishing: {', '.join(gone)}")


def _name_in_use_or_none(master: Master, basedir: str | Path) -> str | None:
    try:
        return name_in_use(master, basedir)
    except Exception as exc:  # a new database without tables, or unreachable: Buildbot itself says so next
        log.msg(f"vllm-cpu: could not check [master] name {master.name!r} on the database: {exc}")
        return None
