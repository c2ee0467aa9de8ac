"""The dead-letter store: deliveries that failed permanently or ran out of retries, with every attempt.

Entries live in `pr:dlq` (delivery key -> JSON) indexed by time in `pr:dlq:index`. Details were redacted
by the delivery code before they got here; the event JSON carries no destination secrets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from postrelay import keys

DLQ = keys.DLQ
INDEX = keys.DLQ_INDEX


def add(redis: Redis, key: str, record: dict[str, str], reason: str, attempts: list[dict[str, Any]],
        now: float) -> None:
    """Store a dead delivery (replacing an older entry for the same key)."""
    dest, _, rest = key.partition("|")
    entry = {
        "key": key,
        "destination": dest,
        "event_id": rest.split("|")[0],
        "reason": reason,
        "dead_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "attempts": attempts,
        "event": json.loads(record["event"]) if "event" in record else None,
        "extra": json.loads(record["extra"]) if record.get("extra") else None,
    }
    pipe = redis.pipeline()
    pipe.hset(DLQ, key, json.dumps(entry))
    pipe.zadd(INDEX, {key: now})
    pipe.execute()


def entries(redis: Redis, destination: str | None = None, since: float | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Dead deliveries, oldest first, optionally for one destination and since a time."""
    keys = redis.zrangebyscore(INDEX, since if since is not None else "-inf", "+inf")
    out = []
    for raw in redis.hmget(DLQ, keys) if keys else []:
        if raw is None:
            continue
        entry = json.loads(raw)
        if destination and entry["destination"] != destination:
            continue
        out.append(entry)
        if limit and len(out) >= limit:
            break
    return out


def size(redis: Redis) -> int:
    """How many dead deliveries are stored."""
    return int(redis.hlen(DLQ))


def remove(redis: Redis, key: str) -> None:
    """Drop one entry (after it was replayed)."""
    pipe = redis.pipeline()
    pipe.hdel(DLQ, key)
    pipe.zrem(INDEX, key)
    pipe.execute()
