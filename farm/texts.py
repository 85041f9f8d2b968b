"""Short texts every view of a release shares: data-API timestamps and "waiting for an aarch64 worker since ...".

The release report, the release builder's decisions, the matrix and the
notifications say these the same way; they live here, below all of them.
"""

from __future__ import annotations

import time
from datetime import datetime


def epoch(value: datetime | float | None) -> int | None:
    """A data-API timestamp as seconds since the epoch (datetime inside the master, int over REST)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    return int(value.timestamp())


def utc(value: datetime | float | None) -> str:
    """``2026-03-02 10:11 UTC`` for a data-API timestamp; "" when unknown."""
    secs = epoch(value)
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(secs)) if secs is not None else ""


def waiting_text(arch: str, since: datetime | float | None) -> str:
    when = utc(since)
    return f"waiting for an {arch} worker" + (f" since {when}" if when else "")
