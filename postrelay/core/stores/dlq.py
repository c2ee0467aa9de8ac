"""The dead-letter store: deliveries that failed permanently or ran out of retries, with every attempt.

Entries live in `pr:dlq` (delivery key -> JSON) indexed by time in `pr:dlq:index`. Details were redacted
by the delivery code before they got here; the event JSON carries no destination secrets. Replaying one
makes it an ordinary (unordered: its piece has moved on) delivery due now, which the next worker claims.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.typing import EncodableT

from postrelay.core import keys
from postrelay.core.replies import members
from postrelay.core.stores import deliveries

DLQ = keys.DLQ
INDEX = keys.DLQ_INDEX


def entry(key: str, record: dict[str, str], reason: str, attempts: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """The stored form of a dead delivery."""
    dest, event_id, _ = deliveries.split_key(key)
    return {
        "key": key,
        "destination": dest,
        "event_id": event_id,
        "reason": reason,
        "dead_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "attempts": attempts,
        "event": json.loads(record["event"]) if "event" in record else None,
        "extra": json.loads(record["extra"]) if record.get("extra") else None,
    }


def add(client: Any, key: str, record: dict[str, str], reason: str, attempts: list[dict[str, Any]],
        now: float) -> None:
    """Store a dead delivery (replacing an older entry for the same key); `client` may be a pipeline."""
    client.hset(DLQ, key, json.dumps(entry(key, record, reason, attempts, now)))
    client.zadd(INDEX, {key: now})


def entries(redis: Redis, destination: str | None = None, since: float | None = None,
            limit: int | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
    """Dead deliveries, oldest (or newest) first, optionally for one destination and since a time."""
    low = since if since is not None else "-inf"
    ids = members(redis.zrevrangebyscore(INDEX, "+inf", low) if newest_first else redis.zrangebyscore(INDEX, low, "+inf"))
    out = []
    for raw in redis.hmget(DLQ, ids) if ids else []:
        if raw is None:
            continue
        item = json.loads(raw)
        if destination and item["destination"] != destination:
            continue
        out.append(item)
        if limit and len(out) >= limit:
            break
    return out


def get(redis: Redis, key: str) -> dict[str, Any] | None:
    """One dead delivery, or None."""
    raw = redis.hget(DLQ, key)
    return json.loads(raw) if raw is not None else None


def size(redis: Redis) -> int:
    """How many dead deliveries are stored."""
    return int(redis.hlen(DLQ))


def remove(client: Any, key: str) -> None:
    """Drop one entry; `client` may be a pipeline."""
    client.hdel(DLQ, key)
    client.zrem(INDEX, key)


def replay_one(redis: Redis, key: str, now: float) -> str:
    """Re-deliver one dead letter: `replayed`, `skipped_done` (it was delivered meanwhile) or `not_found`."""
    item = get(redis, key)
    if item is None:
        return "not_found"
    pipe = redis.pipeline(transaction=True)
    remove(pipe, key)
    if deliveries.is_done(redis, key):
        pipe.execute()
        return "skipped_done"
    mapping: dict[EncodableT, EncodableT] = {"event": json.dumps(item["event"]), "created": now, "seq": ""}
    if item.get("extra"):
        mapping["extra"] = json.dumps(item["extra"])
    pipe.delete(keys.delivery_record(key))
    pipe.hset(keys.delivery_record(key), mapping=mapping)
    deliveries.schedule(pipe, key, now)
    pipe.execute()
    return "replayed"


def replay(redis: Redis, now: float, destination: str | None = None, since: float | None = None) -> dict[str, int]:
    """Re-deliver dead letters (optionally one destination's, since a time); counts `replayed`, `skipped_done`."""
    counts = {"replayed": 0, "skipped_done": 0}
    for item in entries(redis, destination, since):
        outcome = replay_one(redis, item["key"], now)
        if outcome in counts:
            counts[outcome] += 1
    return counts
