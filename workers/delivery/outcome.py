"""Storing what an attempt ended with: success, retry, dead letter — each written through Redis outages.

After a destination answered, giving up on a write would lose its answer: a success would be sent again,
a failure's attempt record would vanish. So these writes retry while Redis is unreachable, full, loading or
read-only (`postrelay.core.outage`), for up to `OUTCOME_PATIENCE` seconds (the lock is renewed meanwhile — a
PEXPIRE, which a full Redis still accepts — so no other worker runs the delivery).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from postrelay.core import keys, stats
from postrelay.core.events import CanonicalEvent
from postrelay.core.outage import write_through
from postrelay.core.scripts import lua
from postrelay.core.stores import deliveries, dlq
from postrelay.workers.delivery.lock import Lock
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.delivery")
OUTCOME_PATIENCE = 900.0  # seconds a worker keeps trying to store an outcome before it gives up (re-sent then)
Start = Callable[[str, str], None]  # hands (delivery key, sequence) to this process's executor


class _StatsOps:
    """Collects what `stats.count_delivery` / `stats.observe` write, to run them inside a script."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.keys.append(key)
        self.args += ["HINCRBY", field, amount]

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.keys.append(key)
        self.args += ["HINCRBYFLOAT", field, repr(float(amount))]


def _patience(rt: Runtime) -> float:
    return time.monotonic() + max(OUTCOME_PATIENCE, 2 * rt.config.delivery.lease)


def _complete(rt: Runtime, key: str, seq: str, event: CanonicalEvent, lock: Lock, remote_id: str | None,
              started_iso: str) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `delivery_complete.lua` for one success."""
    dest, event_id, tag = deliveries.split_key(key)
    ops = _StatsOps()
    stats.count_delivery(ops, dest, "ok")
    if not tag:  # relay deliveries only: a follow-up fires days after its trigger arrived
        stats.observe(ops, "end_to_end", rt.clock() - event.received_at.timestamp())
    done = json.dumps({"remote_id": remote_id, "at": started_iso})
    rec = keys.delivery_record(key)
    return ([keys.delivery_done(key), rec, lock.key, deliveries.DUE, keys.circuit(dest), keys.circuit_probe(dest),
             seq or rec, *ops.keys],
            [done, int(rt.config.delivery.done_retention), key, lock.token, rt.config.delivery.circuit_cooldown,
             event_id, seq, dest, rt.clock() + rt.config.delivery.lease, len(ops.keys), *ops.args])


def store_success(rt: Runtime, key: str, seq: str, event: CanonicalEvent, lock: Lock, remote_id: str | None,
                  started_iso: str) -> str:
    """The one script that makes a success permanent (done marker first); returns the piece's next head or ''."""
    return store_successes(rt, [(key, seq, event, lock, remote_id)], started_iso)[0]


def store_successes(rt: Runtime, done: list[tuple[str, str, CanonicalEvent, Lock, str | None]],
                    started_iso: str) -> list[str]:
    """`delivery_complete.lua` for several successes (a batch's) in one transaction; each one's next head or ''."""
    script = lua("delivery_complete")
    calls = [_complete(rt, key, seq, event, lock, remote_id, started_iso) for key, seq, event, lock, remote_id in done]

    def write() -> Any:
        if len(calls) == 1:
            return [script(rt.redis, keys=calls[0][0], args=calls[0][1])]
        pipe = rt.redis.pipeline(transaction=True)
        for ks, args in calls:
            script(pipe, keys=ks, args=args)
        return pipe.execute()

    heads = write_through(write, "a done marker", _patience(rt), sleep=rt.sleep)
    for entry in done:
        entry[3].released()
    return [head.decode() if isinstance(head, bytes) else head for head in heads]


def store_retry(rt: Runtime, key: str, attempts: list[dict[str, Any]], due: float) -> None:
    """Record the failed attempt and make the delivery due again at `due` (never earlier)."""
    def write() -> None:
        pipe = rt.redis.pipeline(transaction=True)
        pipe.hset(keys.delivery_record(key), "attempts", json.dumps(attempts))
        stats.count_delivery(pipe, deliveries.split_key(key)[0], "retry")
        deliveries.schedule(pipe, key, due)
        pipe.execute()

    write_through(write, "a retry", _patience(rt), sleep=rt.sleep)


def save_step(rt: Runtime, key: str, step: str, remote_id: str) -> None:
    """An adapter finished one step of a multi-call delivery: remember its remote id before the next step."""
    save_steps(rt, {key: {step: remote_id}})


def save_steps(rt: Runtime, steps: dict[str, dict[str, str]]) -> None:
    """Remember the steps several deliveries finished (delivery key -> step -> remote id), in one round trip."""
    if not steps:
        return

    def write() -> None:
        pipe = rt.redis.pipeline()
        for key, memo in steps.items():
            pipe.hset(keys.delivery_memo(key), mapping=dict[Any, Any](memo))
            pipe.expire(keys.delivery_memo(key), int(rt.config.delivery.done_retention))
        pipe.execute()

    write_through(write, "an adapter step", _patience(rt), sleep=rt.sleep)


def dead_letter(rt: Runtime, key: str, seq: str, record: dict[str, str], reason: str,
                attempts: list[dict[str, Any]], start: Start, outcome: str = "dead",
                fields: dict[str, Any] | None = None) -> None:
    """Move the delivery to the dead-letter store, then start its piece's next update."""
    dest, event_id, _ = deliveries.split_key(key)

    def write() -> None:
        pipe = rt.redis.pipeline(transaction=True)
        dlq.add(pipe, key, record, reason, attempts, rt.clock())
        stats.count_delivery(pipe, dest, outcome)
        pipe.execute()

    write_through(write, "a dead letter", _patience(rt), sleep=rt.sleep)
    finish(rt, key, seq, start)  # before the record goes: until then a claim finds the sequence to advance
    if fields is None:
        fields = {"destination": dest, "event_id": event_id}
        piece = (json.loads(record["event"]).get("mailpiece") or {}) if record.get("event") else {}
        fields["mailpiece_id"] = piece.get("id")
    log.warning("dead-lettered", extra={**fields, "outcome": outcome, "delivery": key, "reason": reason})


def finish(rt: Runtime, key: str, seq: str, start: Start) -> None:
    """The delivery is over (done or dead): advance its sequence, start the next head, drop the record."""
    event_id = deliveries.split_key(key)[1]
    if seq:
        head = lua("delivery_advance")(rt.redis, keys=[seq], args=[event_id])
        head = head.decode() if isinstance(head, bytes) else head
        if head:
            nxt = deliveries.delivery_key(keys.seq_destination(seq), head)
            deliveries.schedule(rt.redis, nxt, rt.clock() + rt.config.delivery.lease)
            start(nxt, seq)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.delete(keys.delivery_record(key))
    deliveries.forget(pipe, key)
    pipe.execute()
