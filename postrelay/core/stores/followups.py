"""Pending follow-ups as stored: list and cancel (`postrelay followups`, the console), and the keys' layout.

A pending follow-up is identified by `<rule>|<source>|<mailpiece id>` — one per rule and piece — and lives in
`pr:fu:due` (ids by due time), `pr:fu:{id}` (its record), `pr:fu:piece:{source:piece}` (the piece's pending
ids), once fired `pr:fu:fired:{id}`, and once cancelled by an operator `pr:fu:cancelled:{id}`. Scheduling
and firing are the worker's (`workers/followups.py`).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from postrelay.core import keys
from postrelay.core.replies import members

DUE = keys.FOLLOWUPS_DUE
CANCELLED_KEEP = 400 * 86400  # as long as a timeline is kept by default


def followup_id(rule: str, source: str, piece_id: str) -> str:
    """Deterministic id of a rule's follow-up for one piece."""
    return f"{rule}|{source}|{piece_id}"


def cancel_in(pipe: Any, fid: str, source: str, piece_id: str) -> None:
    """Add the commands removing a pending follow-up to `pipe`."""
    pipe.zrem(DUE, fid)
    pipe.delete(keys.followup(fid))
    pipe.srem(keys.followup_piece(source, piece_id), fid)


def cancel(r: Redis, fid: str, now: float | None = None, by: str = "") -> bool:
    """Remove one pending follow-up, leaving a marker (time, `by`) kept `CANCELLED_KEEP`; False when none is
    pending with that id."""
    if fid.count("|") < 2 or not r.exists(keys.followup(fid)):
        return False
    _, source, piece_id = fid.split("|", 2)
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat()
    pipe = r.pipeline()
    cancel_in(pipe, fid, source, piece_id)
    pipe.set(keys.followup_cancelled(fid), json.dumps({"at": at, "by": by}), ex=CANCELLED_KEEP)
    pipe.execute()
    return True


def pending(r: Redis, mailpiece: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Pending follow-ups (soonest first), optionally for one mailpiece id (any source)."""
    ids = members(r.zrange(DUE, 0, -1))
    if mailpiece:
        ids = [i for i in ids if i.split("|", 2)[2] == mailpiece]
    out = []
    for fid in ids[:limit]:
        raw = r.hget(keys.followup(fid), "data")
        if raw is None:
            continue
        data = json.loads(raw)
        out.append({"id": fid, "rule": data["rule"], "do": data["do"], "mailpiece": data["event"]["mailpiece"]["id"],
                    "source": data["event"]["source"], "due": data["scheduled_for"], "estimated": data["estimated"],
                    "trigger": data["event"]["type"]})
    return out
