"""Delivery records: what is stored about delivering one canonical event to one destination.

A delivery is identified by its key `<destination>|<event id>[|<tag>]` (a tag names a follow-up rule) and
lives in Redis (key builders in `postrelay.core.keys`):
- `pr:dlv:{K}` — the record: event JSON, follow-up extra, created time, attempts (JSON list), sequence key;
- `pr:done:{K}` — the success marker (remote id, time); a delivery whose marker exists is never re-sent;
- `pr:memo:{K}` — remote ids of steps an adapter already did (an activity, a task, …);
- `pr:seq:{dest:source:piece}` — per (destination, mailpiece) FIFO: only its head is delivered, so a piece's
  updates reach a CRM in order; the head's completion (success or dead letter) starts the next;
- `pr:lock:{K}` — the execution lock, renewed while an attempt runs;
- `pr:dlv:inflight` — the due-time set: every delivery that must make progress, scored by when a worker must
  look at it next — its due time (a new delivery: now; a retry, a circuit or rate-limit wait: later) or,
  once a worker claimed it, the lease deadline by which that worker must have finished or renewed it.
  Workers claim what is due (`due_claim.lua`), so delayed work is run on time by whichever worker is alive,
  and work of a killed worker comes due again when its lease runs out.

Scheduling is one `ZADD`: any process (the console's replay, `destinations resume`, a worker's retry) can
make a delivery due without talking to a worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.replies import members

DUE = keys.DELIVERIES_DUE
# Due this long ago and still not claimed: no worker is running delayed work on time (/metrics, /readyz, status).
OVERDUE_AFTER = 30.0


def delivery_key(dest: str, event_id: str, tag: str = "") -> str:
    """The identity of one delivery."""
    return f"{dest}|{event_id}|{tag}" if tag else f"{dest}|{event_id}"


def split_key(key: str) -> tuple[str, str, str]:
    """(destination, event id, tag) of a delivery key."""
    parts = key.split("|")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def seq_key(dest: str, event: CanonicalEvent) -> str:
    """Per (destination, mailpiece) FIFO of event ids (a tracking-link visit bound to a piece: that piece's)."""
    return keys.delivery_seq(dest, *event.piece_key)


def stage(pipe: Any, dest: str, event: CanonicalEvent, *, now: float, due: float, tag: str = "",
          extra: dict[str, Any] | None = None, ordered: bool = True, event_json: str | None = None) -> tuple[str, str]:
    """Add the commands that record one delivery (idempotently) and make it due at `due` to `pipe`; (key, seq).

    An ordered delivery joins its piece's sequence. A delivery already recorded keeps its record.
    """
    key = delivery_key(dest, event.id, tag)
    seq = seq_key(dest, event) if ordered else ""
    rec = keys.delivery_record(key)
    pipe.hsetnx(rec, "event", event_json or event.model_dump_json())
    pipe.hsetnx(rec, "created", now)
    pipe.hsetnx(rec, "seq", seq)
    if extra:
        pipe.hsetnx(rec, "extra", json.dumps(extra))
    if seq:
        pipe.rpush(seq, event.id)
    pipe.zadd(DUE, {key: due})
    return key, seq


def schedule(client: Any, key: str, due: float) -> None:
    """Make delivery `key` due at `due` (epoch seconds, fractions kept): a worker claims it then, not before."""
    client.zadd(DUE, {key: due})


def schedule_many(client: Any, due: dict[str, float]) -> None:
    """Make several deliveries due (key -> due time)."""
    if due:
        client.zadd(DUE, due)


def forget(client: Any, key: str) -> None:
    """The delivery is finished (done, dead, unknown) or parked: nothing must run it any more."""
    client.zrem(DUE, key)


def get(r: Redis, key: str) -> dict[str, Any] | None:
    """One delivery as stored: record, attempts, done marker, due time, lock; None when nothing is stored.

    Fields: `key`, `destination`, `event_id`, `tag`, `state` (`pending`, `running`, `done`, `dead`), `event`,
    `extra`, `created`, `attempts`, `sequence`, `due` (ISO time or null), `done` (the marker: remote id, time).
    """
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.delivery_record(key))
    pipe.get(keys.delivery_done(key))
    pipe.zscore(DUE, key)
    pipe.exists(keys.delivery_lock(key))
    pipe.hexists(keys.DLQ, key)
    rec_raw, done_raw, due, locked, dead = pipe.execute()
    if not rec_raw and done_raw is None and not dead:
        return None
    rec = {k.decode(): v.decode() for k, v in rec_raw.items()}
    dest, event_id, tag = split_key(key)
    state = "done" if done_raw is not None else "dead" if dead else "running" if locked else "pending"
    return {
        "key": key, "destination": dest, "event_id": event_id, "tag": tag or None, "state": state,
        "event": json.loads(rec["event"]) if rec.get("event") else None,
        "extra": json.loads(rec["extra"]) if rec.get("extra") else None,
        "created": _iso(float(rec["created"])) if rec.get("created") else None,
        "attempts": json.loads(rec.get("attempts", "[]")),
        "sequence": rec.get("seq") or None,
        "due": _iso(float(due)) if due is not None else None,
        "done": json.loads(done_raw) if done_raw is not None else None,
    }


def attempts(r: Redis, key: str) -> list[dict[str, Any]]:
    """The attempts recorded so far for a pending delivery (oldest first; [] when none or finished)."""
    raw = r.hget(keys.delivery_record(key), "attempts")
    return json.loads(raw) if raw else []


def is_done(r: Redis, key: str) -> bool:
    """True once the delivery's done marker is stored."""
    return bool(r.exists(keys.delivery_done(key)))


def backlog(r: Redis, destinations: Iterable[str] = ()) -> dict[str, int]:
    """Pending deliveries per destination: those in the due-time set (due, scheduled or running) plus, for the
    named `destinations`, those parked while paused. No SCAN of the keyspace (the console shows it on every load)."""
    out: dict[str, int] = {}
    for key in members(r.zrange(DUE, 0, -1)):
        dest = split_key(key)[0]
        out[dest] = out.get(dest, 0) + 1
    names = list(destinations)
    if names:
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.llen(keys.destination_parked(name))
        for name, parked in zip(names, pipe.execute(), strict=True):
            if parked:
                out[name] = out.get(name, 0) + int(parked)
    return out


def due_counts(r: Redis, now: float, overdue_after: float) -> dict[str, Any]:
    """How much delayed work there is: `ready` (due now), `scheduled` (due later), `overdue` (due more than
    `overdue_after` seconds ago and not claimed: no worker is running it), `oldest_overdue_s`."""
    pipe = r.pipeline(transaction=False)
    pipe.zcount(DUE, "-inf", now)
    pipe.zcount(DUE, f"({now}", "+inf")
    pipe.zcount(DUE, "-inf", now - overdue_after)
    pipe.zrange(DUE, 0, 0, withscores=True)
    ready, later, overdue, head = pipe.execute()
    return {"ready": int(ready), "scheduled": int(later), "overdue": int(overdue),
            "oldest_overdue_s": round(now - head[0][1], 1) if head and head[0][1] <= now - overdue_after else 0.0}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
