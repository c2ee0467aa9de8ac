"""Delivering one canonical event to one destination: at-least-once, never twice.

A delivery is identified by its key `<destination>|<event id>[|<tag>]` and lives in Redis:
- `pr:dlv:{K}` — the record (event JSON, follow-up extra, created time, attempts, sequence key);
- `pr:done:{K}` — the success marker with the remote id; a delivery whose marker exists is never re-sent;
- `pr:memo:{K}` — remote ids of steps already done (an adapter's activity, task, …);
- `pr:seq:{dest}:{source}:{piece}` — per (destination, mailpiece) FIFO: only its head is delivered, so a
  piece's updates reach a CRM in order; the head's completion (success or dead letter) starts the next;
- `pr:dlv:inflight` — leases; a worker killed mid-delivery leaves a lease that expires and the reaper
  re-enqueues the delivery within about `delivery.lease` seconds (RQ alone would take ~10 minutes).

The RQ job `deliver(key, seq)` runs one attempt; retries are rescheduled with `enqueue_at`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from redis.client import Pipeline
from rq import Retry

from adapters.base import DeliveryContext, Outcome, redact
from postrelay import stats
from postrelay.events import CanonicalEvent
from workers import dlq, runtime
from workers.policy import next_attempt
from workers.runtime import Runtime

log = logging.getLogger("postrelay.delivery")
INFLIGHT = "pr:dlv:inflight"
JOB = "workers.deliveries.deliver"
# Only for infrastructure errors inside the job (e.g. Redis failing over mid-attempt): adapter failures are
# handled by postrelay's own retry policy and never raise.
JOB_RETRY = Retry(max=6, interval=[2, 10, 30, 120, 600, 1800])

# KEYS: seq list. ARGV: event id. Pops the head if it is this event, returns the new head (or '').
_ADVANCE = """
local head = redis.call('LINDEX', KEYS[1], 0)
if head == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  while redis.call('LINDEX', KEYS[1], 0) == ARGV[1] do redis.call('LPOP', KEYS[1]) end
  head = redis.call('LINDEX', KEYS[1], 0)
end
return head or ''
"""


def delivery_key(dest: str, event_id: str, tag: str = "") -> str:
    """The identity of one delivery."""
    return f"{dest}|{event_id}|{tag}" if tag else f"{dest}|{event_id}"


def split_key(key: str) -> tuple[str, str, str]:
    """(destination, event id, tag) of a delivery key."""
    parts = key.split("|")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def record_key(key: str) -> str:
    """Hash holding the delivery's record."""
    return f"pr:dlv:{{{key}}}"


def done_key(key: str) -> str:
    """Success marker of a delivery."""
    return f"pr:done:{{{key}}}"


def memo_key(key: str) -> str:
    """Remote ids of an adapter's completed steps for a delivery."""
    return f"pr:memo:{{{key}}}"


def lock_key(key: str) -> str:
    """Execution lock so two workers never run the same delivery at once."""
    return f"pr:lock:{{{key}}}"


def seq_key(dest: str, event: CanonicalEvent) -> str:
    """Per (destination, mailpiece) FIFO of event ids."""
    return f"pr:seq:{{{dest}:{event.source}:{event.mailpiece.id}}}"


def paused_key(dest: str) -> str:
    """Flag set while a destination is paused."""
    return f"pr:dest:{{{dest}}}:paused"


def parked_key(dest: str) -> str:
    """Deliveries that arrived while their destination was paused."""
    return f"pr:dest:{{{dest}}}:parked"


def stage_delivery(pipe: Pipeline, rt: Runtime, dest: str, event: CanonicalEvent, *, tag: str = "",
                   extra: dict[str, Any] | None = None, ordered: bool = True) -> Any:
    """Add the commands that create a delivery to `pipe`; returns RQ enqueue data for the job.

    Creating is idempotent: a delivery already recorded keeps its record; the job checks the done marker.
    """
    key = delivery_key(dest, event.id, tag)
    seq = seq_key(dest, event) if ordered else ""
    rec = record_key(key)
    pipe.hsetnx(rec, "event", event.model_dump_json())
    pipe.hsetnx(rec, "created", rt.clock())
    pipe.hsetnx(rec, "seq", seq)
    if extra:
        pipe.hsetnx(rec, "extra", json.dumps(extra))
    if seq:
        pipe.rpush(seq, event.id)
    return rt.queue.prepare_data(JOB, args=(key, seq), timeout=int(rt.config.delivery.timeout * 4 + 30),
                                 result_ttl=0, failure_ttl=86400, retry=JOB_RETRY)


def enqueue(rt: Runtime, key: str, seq: str, delay: float = 0.0) -> None:
    """Queue an attempt now or after `delay` seconds (RQ's scheduler enqueues it when due)."""
    kwargs = {"job_timeout": int(rt.config.delivery.timeout * 4 + 30), "result_ttl": 0, "failure_ttl": 86400,
              "retry": JOB_RETRY}
    if delay > 0.05:
        when = datetime.fromtimestamp(rt.clock() + delay, UTC)
        rt.queue.enqueue_at(when, JOB, key, seq, **kwargs)
    else:
        rt.queue.enqueue(JOB, key, seq, **kwargs)


def deliver(key: str, seq: str = "") -> str:
    """RQ job: one delivery attempt. Returns what happened (for logs and tests)."""
    return attempt(runtime.current(), key, seq)


def attempt(rt: Runtime, key: str, seq: str = "") -> str:
    """Run one attempt of delivery `key` with the given runtime."""
    dest, event_id, _ = split_key(key)
    r = rt.redis
    if r.exists(done_key(key)):
        _finish(rt, key, seq, event_id)
        return "already_done"
    record = {k.decode(): v.decode() for k, v in r.hgetall(record_key(key)).items()}
    if not record:
        if seq:
            _advance(rt, seq, event_id)
        return "unknown"
    seq = record.get("seq", seq)
    if seq:
        head = r.lindex(seq, 0)
        if head is None or head.decode() != event_id:
            return "waiting_for_turn"  # the delivery ahead of it will start this one when it finishes
    adapter = rt.adapters.get(dest)
    if adapter is None:
        _dead(rt, key, seq, event_id, record, f"destination {dest!r} is not configured on this worker", [],
              "permanent")
        return "dead"
    now = rt.clock()
    if r.exists(paused_key(dest)):
        r.rpush(parked_key(dest), json.dumps([key, seq]))
        return "parked"
    gate = rt.breaker.gate(dest, now)
    if not gate.allowed:
        enqueue(rt, key, seq, gate.wait)
        return "circuit_open"
    rate = rt.rates.get(dest)
    if rate:
        wait = rt.limiter.wait(dest, rate, now)
        while 0 < wait <= 1.0:
            rt.sleep(wait)
            wait = rt.limiter.wait(dest, rate, rt.clock())
        if wait > 1.0:
            enqueue(rt, key, seq, wait)
            return "rate_limited"
    lease = rt.config.delivery.lease
    if not r.set(lock_key(key), "1", nx=True, px=int(lease * 1000)):
        return "locked"
    r.zadd(INFLIGHT, {key: rt.clock() + lease})
    try:
        return _run(rt, adapter, key, seq, event_id, record)
    finally:
        pipe = r.pipeline()
        pipe.zrem(INFLIGHT, key)
        pipe.delete(lock_key(key))
        pipe.execute()


def _run(rt: Runtime, adapter: Any, key: str, seq: str, event_id: str, record: dict[str, str]) -> str:
    dest = adapter.name
    r = rt.redis
    event = CanonicalEvent.model_validate_json(record["event"])
    attempts: list[dict[str, Any]] = json.loads(record.get("attempts", "[]"))
    memo = {k.decode(): v.decode() for k, v in r.hgetall(memo_key(key)).items()}
    retention = int(rt.config.delivery.done_retention)

    def save(step: str, remote_id: str) -> None:
        pipe = r.pipeline()
        pipe.hset(memo_key(key), step, remote_id)
        pipe.expire(memo_key(key), retention)
        pipe.execute()

    ctx = DeliveryContext(destination=dest, attempt=len(attempts) + 1,
                          extra=json.loads(record.get("extra", "{}")), _memo=memo, _save=save)
    started = rt.clock()
    try:
        outcome = adapter.deliver(event, ctx)
    except Exception as exc:  # an adapter bug must not lose the delivery
        log.exception("adapter %s raised", dest)
        outcome = Outcome.retry(f"adapter error: {type(exc).__name__}: {exc}")
    detail = redact(outcome.detail, adapter.secrets())[:500]
    attempts.append({"at": datetime.fromtimestamp(started, UTC).isoformat(), "outcome": outcome.status,
                     "status": outcome.http_status, "detail": detail,
                     "duration_ms": round((rt.clock() - started) * 1000, 1)})
    fields = _log_fields(dest, key, event, attempts)
    if outcome.ok:
        pipe = r.pipeline()
        pipe.set(done_key(key), json.dumps({"remote_id": outcome.remote_id, "at": attempts[-1]["at"]}), ex=retention)
        pipe.delete(record_key(key))
        stats.count_delivery(pipe, dest, "ok")
        if not split_key(key)[2]:  # relay deliveries only: a follow-up fires days after its trigger arrived
            stats.observe(pipe, "end_to_end", rt.clock() - event.received_at.timestamp())
        pipe.execute()
        rt.breaker.success(dest)
        _finish(rt, key, seq, event_id)
        log.info("delivered", extra={**fields, "outcome": "ok", "remote_id": outcome.remote_id})
        return "ok"
    if outcome.status == "permanent":
        _dead(rt, key, seq, event_id, record, detail, attempts, "permanent", fields)
        return "dead"
    rt.breaker.failure(dest, rt.clock(), detail)
    age = rt.clock() - float(record.get("created", started))
    decision = next_attempt(rt.config.delivery, len(attempts), age, outcome.retry_after)
    if decision.dead:
        _dead(rt, key, seq, event_id, record, f"{decision.reason}; last: {detail}", attempts, "dead", fields)
        return "dead"
    pipe = r.pipeline()
    pipe.hset(record_key(key), "attempts", json.dumps(attempts))
    stats.count_delivery(pipe, dest, "retry")
    pipe.execute()
    enqueue(rt, key, seq, decision.delay)
    log.info("delivery failed; will retry", extra={**fields, "outcome": "retry", "detail": detail,
                                                    "retry_in_s": round(decision.delay, 1)})
    return "retry"


def _log_fields(dest: str, key: str, event: CanonicalEvent, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """What every delivery log line carries."""
    last = attempts[-1] if attempts else {}
    fields = {"destination": dest, "event_id": event.id, "mailpiece_id": event.mailpiece.id, "source": event.source,
              "event_type": event.type.value, "attempt": len(attempts), "status": last.get("status"),
              "duration_ms": last.get("duration_ms")}
    tag = split_key(key)[2]
    if tag:
        fields["followup"] = tag
    return fields


def _dead(rt: Runtime, key: str, seq: str, event_id: str, record: dict[str, str], reason: str,
          attempts: list[dict[str, Any]], outcome: str = "dead", fields: dict[str, Any] | None = None) -> None:
    dlq.add(rt.redis, key, record, reason, attempts, rt.clock())
    pipe = rt.redis.pipeline()
    pipe.delete(record_key(key))
    stats.count_delivery(pipe, split_key(key)[0], outcome)
    pipe.execute()
    _finish(rt, key, seq, event_id)
    if fields is None:
        fields = {"destination": split_key(key)[0], "event_id": event_id}
        piece = (json.loads(record["event"]).get("mailpiece") or {}) if record.get("event") else {}
        fields["mailpiece_id"] = piece.get("id")
    log.warning("dead-lettered", extra={**fields, "outcome": outcome, "delivery": key, "reason": reason})


def _finish(rt: Runtime, key: str, seq: str, event_id: str) -> None:
    if seq:
        _advance(rt, seq, event_id)


def _advance(rt: Runtime, seq: str, event_id: str) -> None:
    """Pop this event off its sequence and start the next one's delivery."""
    head = rt.redis.register_script(_ADVANCE)(keys=[seq], args=[event_id])
    head = head.decode() if isinstance(head, bytes) else head
    if head:
        dest = seq[len("pr:seq:{"):].split(":", 1)[0]
        enqueue(rt, delivery_key(dest, head), seq)


def reap(rt: Runtime, limit: int = 500) -> int:
    """Re-enqueue deliveries whose lease expired (their worker died); returns how many."""
    now = rt.clock()
    expired = rt.redis.zrangebyscore(INFLIGHT, "-inf", now, start=0, num=limit)
    count = 0
    for raw in expired:
        key = raw.decode()
        rec_seq = rt.redis.hget(record_key(key), "seq")
        rt.redis.zadd(INFLIGHT, {key: now + rt.config.delivery.lease})
        if rt.redis.exists(done_key(key)) or rec_seq is None:
            rt.redis.zrem(INFLIGHT, key)
            continue
        enqueue(rt, key, rec_seq.decode())
        count += 1
    return count


def resume_parked(rt: Runtime, dest: str) -> int:
    """Re-enqueue every delivery parked while `dest` was paused; returns how many."""
    count = 0
    while True:
        raw = rt.redis.lpop(parked_key(dest))
        if raw is None:
            return count
        key, seq = json.loads(raw)
        enqueue(rt, key, seq)
        count += 1


def replay_dead(rt: Runtime, destination: str | None = None, since: float | None = None) -> dict[str, int]:
    """Re-deliver dead-lettered deliveries (unordered: their piece has moved on). Already-done ones are skipped."""
    counts = {"replayed": 0, "skipped_done": 0}
    for entry in dlq.entries(rt.redis, destination, since):
        key = entry["key"]
        if rt.redis.exists(done_key(key)):
            dlq.remove(rt.redis, key)
            counts["skipped_done"] += 1
            continue
        mapping = {"event": json.dumps(entry["event"]), "created": rt.clock(), "seq": ""}
        if entry.get("extra"):
            mapping["extra"] = json.dumps(entry["extra"])
        rt.redis.hset(record_key(key), mapping=mapping)
        dlq.remove(rt.redis, key)
        enqueue(rt, key, "")
        counts["replayed"] += 1
    return counts


def destination_report(rt: Runtime) -> list[dict[str, Any]]:
    """Per destination: type, circuit state, paused flag, backlog (queued+retrying+parked), dead, last error."""
    now = rt.clock()
    dead_by_dest: dict[str, int] = {}
    for entry in dlq.entries(rt.redis):
        dead_by_dest[entry["destination"]] = dead_by_dest.get(entry["destination"], 0) + 1
    backlog: dict[str, int] = {}
    for raw in rt.redis.scan_iter(match="pr:dlv:{*}", count=1000):
        dest = raw.decode()[len("pr:dlv:{"):].split("|", 1)[0]
        backlog[dest] = backlog.get(dest, 0) + 1
    rows = []
    for name, dest in rt.config.destinations.items():
        state = rt.breaker.state(name, now)
        rows.append({"name": name, "type": dest.type, "state": state["state"], "failures": state["failures"],
                     "paused": bool(rt.redis.exists(paused_key(name))), "backlog": backlog.get(name, 0),
                     "parked": int(rt.redis.llen(parked_key(name))), "dead": dead_by_dest.get(name, 0),
                     "last_error": state["last_error"], "open_until": state["open_until"]})
    return rows
