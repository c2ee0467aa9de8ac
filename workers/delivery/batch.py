"""One batch attempt: several deliveries of one destination in one vendor batch call, each settled on its own.

The same records, locks, done markers and due-time set as a single attempt (`workers.delivery.attempt`):
1. Destination gates once for the batch: paused (each delivery is parked by its own attempt), circuit (open:
   all wait; half-open: the batch is the probe), rate limit (a slot within `RATE_PATIENCE`: the batch waits
   for it in its thread and stays formed; later: all are made due when it comes).
2. `delivery_prepare.lua` for every delivery, in one pipeline (those the record names another sequence for, e.g.
   claimed by the due loop, in a second one): done or dead-lettered ones are finished, one that
   is not its piece's turn or is locked elsewhere drops out (its piece's head starts it later), the rest are
   locked with a fresh lease deadline. A piece has one delivery in flight, so a batch holds at most one
   update of each piece; its next update starts after this one finishes, in a later batch: order is kept.
3. One `adapter.deliver_batch` call (an adapter makes one or a few HTTP requests, each taking a rate slot),
   one outcome per delivery.
4. Then, in this order: the memo steps the adapter recorded (activity ids, one round trip), the done markers
   of every success (`delivery_complete.lua` each, in one transaction), each success's next head started;
   then each failure's own retry (its backoff, never before its Retry-After) or dead letter.
   A batch where nothing succeeded and something must be retried counts one circuit-breaker failure.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from postrelay.adapters.base import Adapter, BatchItem, DeliveryContext, Outcome
from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.logs import log_fields
from postrelay.core.redaction import MASK, redact
from postrelay.core.replies import text_map
from postrelay.core.stores import deliveries, destinations
from postrelay.workers.delivery.attempt import attempt, delivery_log_fields, prepare
from postrelay.workers.delivery.lock import Lock
from postrelay.workers.delivery.outcome import Start, dead_letter, finish, save_steps, store_retry, store_successes
from postrelay.workers.policy import next_attempt
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.delivery")
RATE_PATIENCE = 10.0  # seconds a formed batch waits in its thread for its rate slot (longer: made due again)


@dataclass
class _Ready:
    """A delivery of the batch that is locked and about to be sent."""

    key: str
    seq: str
    record: dict[str, str]
    lock: Lock
    memo: dict[str, str]
    event: CanonicalEvent | None = None


def attempt_batch(rt: Runtime, dest: str, items: list[tuple[str, str]], start: Start) -> dict[str, str]:
    """Run one batch attempt for `dest`; returns what happened to each delivery key (as `attempt` says)."""
    adapter = rt.adapters.get(dest)
    r = rt.redis
    now = rt.clock()
    if adapter is None or destinations.is_paused(r, dest):
        return {key: attempt(rt, key, seq, start) for key, seq in items}  # dead letters, parking: one by one
    gate = rt.breaker.gate(dest, now)
    if not gate.allowed:
        deliveries.schedule_many(r, {key: now + gate.wait for key, _ in items})
        return dict.fromkeys((key for key, _ in items), "circuit_open")
    if adapter.pace is not None:  # a formed batch waits in its thread until its slot is within a second
        wait = rt.limiter.pace(dest, rt.rates.get(dest), rt.clock, rt.sleep, take=False, near=1.0,
                               patience=min(RATE_PATIENCE, rt.config.delivery.lease / 4))  # inside the leases
        if wait is not None:
            deliveries.schedule_many(r, {key: rt.clock() + wait for key, _ in items})
            return dict.fromkeys((key for key, _ in items), "rate_limited")
    results: dict[str, str] = {}
    ready = _prepare(rt, dest, items, start, results)
    if ready:
        try:
            _run(rt, adapter, ready, start, results)
        finally:
            for item in ready:
                item.lock.release()
    return results


def _prepare(rt: Runtime, dest: str, items: list[tuple[str, str]], start: Start,
             results: dict[str, str]) -> list[_Ready]:
    """Prepare and lock every delivery of the batch (one pipeline); the ones that may run now."""
    lease = rt.config.delivery.lease
    locks = {key: Lock(rt.redis, key, lease) for key, _ in items}
    seqs = dict(items)
    answers: dict[str, Any] = {}
    todo = list(seqs)
    for _ in range(3):  # the record's own sequence wins: those called with another are called again with it
        pipe = rt.redis.pipeline(transaction=False)
        for key in todo:
            prepare(rt, pipe, key, seqs[key], locks[key], "1")
        answers.update(zip(todo, pipe.execute(), strict=True))
        todo = [key for key in todo if answers[key][0] == b"seq"]
        if not todo:
            break
        for key in todo:
            seqs[key] = answers[key][1].decode()
    ready: list[_Ready] = []
    for key, _ in items:
        seq, res = seqs[key], answers[key]
        status = res[0].decode()
        if status in ("done", "dead", "unknown"):
            finish(rt, key, (res[1].decode() if len(res) > 1 else "") or seq, start)
            results[key] = {"done": "already_done", "dead": "dead", "unknown": "unknown"}[status]
        elif status == "run":
            locks[key].adopt()
            ready.append(_Ready(key, seq, _pairs(res[1]), locks[key], _pairs(res[2])))
        elif status == "slow" and locks[key].acquire():  # the half-open probe: this batch goes through
            deliveries.schedule(rt.redis, key, rt.clock() + lease)
            memo = text_map(rt.redis.hgetall(keys.delivery_memo(key)))
            ready.append(_Ready(key, seq, _pairs(res[1]), locks[key], memo))
        else:
            results[key] = {"waiting": "waiting_for_turn", "seq": "waiting_for_turn"}.get(status, "locked")
    return ready


def _run(rt: Runtime, adapter: Adapter, ready: list[_Ready], start: Start, results: dict[str, str]) -> None:
    """Call the adapter once for the batch and settle every delivery (the successes first of all)."""
    dest = adapter.name
    contexts: list[DeliveryContext] = []
    for item in ready:
        item.event = CanonicalEvent.model_validate_json(item.record["event"])
        attempts = json.loads(item.record.get("attempts", "[]"))
        contexts.append(DeliveryContext(destination=dest, attempt=len(attempts) + 1,
                                        extra=json.loads(item.record.get("extra", "{}")), _memo=dict(item.memo)))
    started = rt.clock()
    started_iso = datetime.fromtimestamp(started, UTC).isoformat()
    batch = [BatchItem(item.event, ctx) for item, ctx in zip(ready, contexts, strict=True) if item.event]
    try:
        outcomes = adapter.deliver_batch(batch)
    except Exception as exc:  # an adapter bug must not lose the deliveries
        log.exception("adapter %s raised in a batch", dest)
        outcomes = [Outcome.retry(f"adapter error: {type(exc).__name__}: {exc}") for _ in batch]
    if len(outcomes) != len(batch):
        outcomes = [Outcome.retry(f"adapter answered {len(outcomes)} outcomes for {len(batch)} deliveries")
                    for _ in batch]
    save_steps(rt, {item.key: {k: v for k, v in ctx._memo.items() if item.memo.get(k) != v}
                    for item, ctx in zip(ready, contexts, strict=True) if ctx._memo != item.memo})
    succeeded = [(item, o) for item, o in zip(ready, outcomes, strict=True) if o.ok]
    if succeeded:
        heads = store_successes(rt, [(item.key, item.seq, item.event, item.lock, o.remote_id)  # type: ignore[misc]
                                     for item, o in succeeded], started_iso)
        for (item, _), head in zip(succeeded, heads, strict=True):
            if head:
                start(deliveries.delivery_key(dest, head), item.seq)
    duration_ms = round((rt.clock() - started) * 1000, 1)
    failed = [(item, o) for item, o in zip(ready, outcomes, strict=True) if not o.ok]
    if failed and not succeeded and any(o.status == "retry" for _, o in failed):
        rt.breaker.failure(dest, rt.clock(), redact(failed[0][1].detail, adapter.secrets(), mask=MASK)[:300])
    logged = log.isEnabledFor(logging.INFO)
    for item, outcome in succeeded:
        if logged:
            log_fields(log, logging.INFO, "delivered", {
                **delivery_log_fields(dest, item.key, item.event, _attempts(item, outcome, started_iso, duration_ms, "")),  # type: ignore[arg-type]
                "outcome": "ok", "remote_id": outcome.remote_id, "batch": len(ready)})
        results[item.key] = "ok"
    for item, outcome in failed:
        results[item.key] = _settle_failure(rt, adapter, item, outcome, start, started_iso, duration_ms, len(ready))


def _settle_failure(rt: Runtime, adapter: Adapter, item: _Ready, outcome: Outcome, start: Start, started_iso: str,
                    duration_ms: float, size: int) -> str:
    """A failed delivery of the batch: its own dead letter, or its own retry at its own backoff."""
    detail = redact(outcome.detail, adapter.secrets(), mask=MASK)[:500]
    attempts = _attempts(item, outcome, started_iso, duration_ms, detail)
    fields = {**delivery_log_fields(adapter.name, item.key, item.event, attempts), "batch": size}  # type: ignore[arg-type]
    if outcome.status == "permanent":
        dead_letter(rt, item.key, item.seq, item.record, detail, attempts, start, "permanent", fields)
        return "dead"
    age = rt.clock() - float(item.record.get("created", rt.clock()))
    decision = next_attempt(rt.config.delivery, len(attempts), age, outcome.retry_after)
    if decision.dead:
        dead_letter(rt, item.key, item.seq, item.record, f"{decision.reason}; last: {detail}", attempts, start, "dead",
                    fields)
        return "dead"
    store_retry(rt, item.key, attempts, rt.clock() + decision.delay)
    log_fields(log, logging.INFO, "delivery failed; will retry",
               {**fields, "outcome": "retry", "detail": detail, "retry_in_s": round(decision.delay, 1)})
    return "retry"


def _attempts(item: _Ready, outcome: Outcome, started_iso: str, duration_ms: float, detail: str) -> list[dict[str, Any]]:
    """The delivery's attempt list with this batch attempt appended."""
    attempts: list[dict[str, Any]] = json.loads(item.record.get("attempts", "[]"))
    attempts.append({"at": started_iso, "outcome": outcome.status, "status": outcome.http_status, "detail": detail,
                     "duration_ms": duration_ms})
    return attempts


def _pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
