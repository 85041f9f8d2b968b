"""The custody ledger in Buildbot's database: file name -> the sha256 this farm built, verified and uploaded.

Kept in Buildbot's ``object_state`` table (``master.db.state``): written
only by master-side code (``PublishWheels`` when its ``upload`` reported
the sha256 of the bytes it verified and sent, or found on the index),
shared by every master of a cluster, kept across restarts.  One state
entry per file name, so two uploads finishing together never lose each
other's entry.  The rules that read it are ``farm.custody``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from twisted.internet import defer, reactor, threads

from farm.custody import Ledger

OBJECT_NAME, OBJECT_CLASS = "vllm-cpu-custody", "farm.custody.Ledger"
MAX_NAME = 255  # object_state.name's length


async def _objectid(master: Any) -> int:
    return int(await master.db.state.getObjectId(OBJECT_NAME, OBJECT_CLASS))


async def record(master: Any, files: dict[str, str], build_url: str) -> None:
    """Record that this farm verified and uploaded ``files`` ({file name: sha256})."""
    if not files:
        return
    oid = await _objectid(master)
    for name, sha in sorted(files.items()):
        if sha and len(name) <= MAX_NAME:
            await master.db.state.setState(oid, name, {"sha256": sha, "build": build_url})


async def lookup(master: Any, names: Iterable[str]) -> dict[str, str]:
    """{file name: recorded sha256} for the ``names`` the ledger holds (one query per 500 names)."""
    wanted = sorted({n for n in names if len(n) <= MAX_NAME})
    if not wanted:
        return {}
    oid = await _objectid(master)
    table = master.db.model.object_state

    def thd(conn: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(wanted), 500):
            q = sa.select(table.c.name, table.c.value_json).where(table.c.objectid == oid,
                                                                   table.c.name.in_(wanted[i:i + 500]))
            for name, value in conn.execute(q):
                entry = json.loads(value)
                if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                    out[str(name)] = entry["sha256"]
        return out

    result: dict[str, str] = await master.db.pool.do(thd)
    return result


def blocking(master: Any) -> Ledger:
    """``lookup`` for code running in a thread (the index is read there): waits on the reactor."""

    def ledger(names: list[str]) -> dict[str, str]:
        result: dict[str, str] = threads.blockingCallFromThread(
            reactor, lambda: defer.ensureDeferred(lookup(master, names)))
        return result

    return ledger
