"""One delivery attempt — the only code that calls an adapter — run by the worker's executor.

`attempt(rt, key, seq, start)` prepares the attempt in one script (`delivery_prepare.lua`: done? its piece's
turn? paused, circuit, a rate-limit slot free now? then lock), calls the adapter, and stores the outcome
(`workers.delivery.outcome`): after a 2xx the done marker is the first thing written. A retry, a circuit or
rate-limit wait makes the delivery due later in the due-time set; whichever worker is alive then claims it.
`start(key, seq)` hands a piece's next update to the executor when this one finishes.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from postrelay.adapters.base import Adapter, DeliveryContext, Outcome
from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.logs import log_fields
from postrelay.core.redaction import MASK, redact
from postrelay.core.replies import text_map
from postrelay.core.scripts import lua
from postrelay.core.stores import deliveries, destinations
from postrelay.workers.delivery.lock import Lock
from postrelay.workers.delivery.outcome import Start, dead_letter, finish, save_step, store_retry, store_success
from postrelay.workers.policy import next_attempt
from postrelay.workers.ratelimit import slot_args, slot_keys
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.delivery")


def _decode_pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def attempt(rt: Runtime, key: str, seq: str, start: Start) -> str:
    """Run one attempt of delivery `key` (`seq`: its piece's sequence, '' if unordered or not known).

    Returns what happened: ok, retry, dead, already_done, unknown, waiting_for_turn, locked, parked,
    circuit_open, rate_limited.
    """
    dest = deliveries.split_key(key)[0]
    r = rt.redis
    adapter = rt.adapters.get(dest)
    lease = rt.config.delivery.lease
    lock = Lock(r, key, lease)
    may_lock = "0" if adapter is None else "1" if adapter.pace is None else "2"  # 2: once a rate slot is free
    for _ in range(2):
        res = prepare(rt, r, key, seq, lock, may_lock)
        if res[0] != b"seq":
            break
        seq = res[1].decode()  # the record's own sequence wins over the caller's
    else:
        return "waiting_for_turn"  # the record changed its sequence twice meanwhile: its lease brings it back
    status = res[0].decode()
    if status in ("done", "dead"):
        finish(rt, key, res[1].decode() or seq, start)
        return "already_done" if status == "done" else "dead"
    if status == "unknown":
        finish(rt, key, seq, start)
        return "unknown"
    if status == "waiting":
        return "waiting_for_turn"  # the delivery ahead of it starts this one when it finishes
    if status == "locked":
        return "locked"  # another worker runs it; its due entry comes back at the lease deadline
    record = _decode_pairs(res[1])
    if status == "run":
        lock.adopt()
        try:
            return _run(rt, adapter, key, seq, record, lock, _decode_pairs(res[2]), start)  # type: ignore[arg-type]
        finally:
            lock.release()
    return _slow(rt, adapter, key, seq, record, lock, start)


def prepare(rt: Runtime, client: Any, key: str, seq: str, lock: Lock, may_lock: str) -> Any:
    """Call `delivery_prepare.lua` for delivery `key` on `client` (a Redis client or a pipeline); `may_lock` as
    its ARGV[7] says ('1': lock when nothing stops it, '2': only when a rate-limit slot is free now too)."""
    dest, event_id, _ = deliveries.split_key(key)
    rec_key = keys.delivery_record(key)
    now = rt.clock()
    return lua("delivery_prepare")(
        client, keys=[keys.delivery_done(key), rec_key, keys.delivery_memo(key), lock.key, deliveries.DUE,
                      seq or rec_key, keys.destination_paused(dest), keys.circuit(dest), keys.DLQ, *slot_keys(dest)],
        args=[event_id, seq, lock.token, lock.ttl_ms, now + rt.config.delivery.lease, key, may_lock, dest,
              *slot_args(rt.rates.get(dest), now)])


def _slow(rt: Runtime, adapter: Adapter | None, key: str, seq: str, record: dict[str, str], lock: Lock,
          start: Start) -> str:
    """The uncommon path (no adapter, paused, breaker not closed, rate limited): one check at a time."""
    dest = deliveries.split_key(key)[0]
    r = rt.redis
    if adapter is None:
        dead_letter(rt, key, seq, record, f"destination {dest!r} is not configured on this worker", [], start,
                    "permanent")
        return "dead"
    now = rt.clock()
    if destinations.is_paused(r, dest):
        pipe = r.pipeline()
        destinations.park(pipe, key, seq)
        pipe.execute()
        return "parked"
    gate = rt.breaker.gate(dest, now)
    if not gate.allowed:
        deliveries.schedule(r, key, now + gate.wait)
        return "circuit_open"
    if adapter.pace is not None:  # look only: each of the adapter's calls takes its own slot (`Adapter.call`)
        wait = rt.limiter.pace(dest, rt.rates.get(dest), rt.clock, rt.sleep, patience=1.0, take=False)
        if wait is not None:
            deliveries.schedule(r, key, rt.clock() + wait)
            return "rate_limited"
    if not lock.acquire():
        return "locked"
    deliveries.schedule(r, key, rt.clock() + rt.config.delivery.lease)
    try:
        memo = text_map(r.hgetall(keys.delivery_memo(key)))
        return _run(rt, adapter, key, seq, record, lock, memo, start)
    finally:
        lock.release()


def _run(rt: Runtime, adapter: Adapter, key: str, seq: str, record: dict[str, str], lock: Lock,
         memo: dict[str, str], start: Start) -> str:
    """Call the adapter and store its outcome (a success first of all)."""
    dest = adapter.name
    event = CanonicalEvent.model_validate_json(record["event"])
    attempts: list[dict[str, Any]] = json.loads(record.get("attempts", "[]"))
    ctx = DeliveryContext(destination=dest, attempt=len(attempts) + 1, extra=json.loads(record.get("extra", "{}")),
                          _memo=memo, _save=lambda step, remote_id: save_step(rt, key, step, remote_id))
    started = rt.clock()
    started_iso = datetime.fromtimestamp(started, UTC).isoformat()
    try:
        outcome = adapter.deliver(event, ctx)
    except Exception as exc:  # an adapter bug must not lose the delivery
        log.exception("adapter %s raised", dest)
        outcome = Outcome.retry(f"adapter error: {type(exc).__name__}: {exc}")
    if outcome.ok:
        head = store_success(rt, key, seq, event, lock, outcome.remote_id, started_iso)  # nothing before this
        if head:
            start(deliveries.delivery_key(dest, head), seq)
    detail = redact(outcome.detail, adapter.secrets(), mask=MASK)[:500]
    attempts.append({"at": started_iso, "outcome": outcome.status, "status": outcome.http_status, "detail": detail,
                     "duration_ms": round((rt.clock() - started) * 1000, 1)})
    fields = delivery_log_fields(dest, key, event, attempts)
    if outcome.ok:
        log_fields(log, logging.INFO, "delivered", {**fields, "outcome": "ok", "remote_id": outcome.remote_id})
        return "ok"
    if outcome.status == "permanent":
        dead_letter(rt, key, seq, record, detail, attempts, start, "permanent", fields)
        return "dead"
    rt.breaker.failure(dest, rt.clock(), detail)
    age = rt.clock() - float(record.get("created", started))
    decision = next_attempt(rt.config.delivery, len(attempts), age, outcome.retry_after)
    if decision.dead:
        dead_letter(rt, key, seq, record, f"{decision.reason}; last: {detail}", attempts, start, "dead", fields)
        return "dead"
    store_retry(rt, key, attempts, rt.clock() + decision.delay)
    log_fields(log, logging.INFO, "delivery failed; will retry",
               {**fields, "outcome": "retry", "detail": detail, "retry_in_s": round(decision.delay, 1)})
    return "retry"


def delivery_log_fields(dest: str, key: str, event: CanonicalEvent, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """What every delivery log line carries."""
    last = attempts[-1] if attempts else {}
    fields = {"destination": dest, "event_id": event.id, "mailpiece_id": event.mailpiece.id, "source": event.source,
              "event_type": event.type.value, "attempt": len(attempts), "status": last.get("status"),
              "duration_ms": last.get("duration_ms")}
    tag = deliveries.split_key(key)[2]
    if tag:
        fields["followup"] = tag
    return fields
