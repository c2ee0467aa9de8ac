"""Delivering one canonical event to one destination: at-least-once, never twice.

A delivery is identified by its key `<destination>|<event id>[|<tag>]` and lives in Redis:
- `pr:dlv:{K}` — the record (event JSON, follow-up extra, created time, attempts, sequence key);
- `pr:done:{K}` — the success marker with the remote id; a delivery whose marker exists is never re-sent;
- `pr:memo:{K}` — remote ids of steps already done (an adapter's activity, task, …);
- `pr:seq:{dest}:{source}:{piece}` — per (destination, mailpiece) FIFO: only its head is delivered, so a
  piece's updates reach a CRM in order; the head's completion (success or dead letter) starts the next;
- `pr:dlv:inflight` — a deadline for every delivery that must make progress (queued, scheduled, running);
  `pr:dlv:jobs` — the RQ job that should make it. The reaper re-enqueues a delivery whose deadline passed
  when it is its piece's turn, no live worker holds its lock and its job is no longer queued: a worker
  killed mid-delivery, or between taking a job off the queue and locking it, or between a success and
  starting the next delivery of the piece, loses nothing (recovered within about 2 x `delivery.lease`;
  RQ alone would take ~10 minutes, and would not re-run a job that was never started).
- `pr:lock:{K}` — the execution lock, renewed while an attempt runs (an attempt may outlast the lease).

The RQ job `deliver(key, seq)` runs one attempt; retries are rescheduled with `enqueue_at`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
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
JOBS = "pr:dlv:jobs"
PENDING_JOB_STATES = frozenset({b"queued", b"scheduled", b"deferred"})
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# KEYS: inflight zset, seq list. ARGV: delivery key, event id, destination, next deadline. Atomic, so a head
# that advances concurrently is never mistaken for a waiting one. Returns 1 when the delivery still waits.
_WAITING = """
local head = redis.call('LINDEX', KEYS[2], 0)
if (not head) or head == ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[1], 'NX', ARGV[4], ARGV[3] .. '|' .. head)
return 1
"""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
JOB = "workers.deliveries.deliver"
BATCH_JOB = "workers.deliveries.deliver_batch"
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


def _stage_record(pipe: Pipeline, rt: Runtime, dest: str, event: CanonicalEvent, tag: str,
                  extra: dict[str, Any] | None, ordered: bool, job_id: str) -> tuple[str, str]:
    """Add the commands that record one delivery (idempotently) to `pipe`; returns (key, seq)."""
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
    pipe.hset(JOBS, key, job_id)
    pipe.zadd(INFLIGHT, {key: rt.clock() + rt.config.delivery.lease})
    return key, seq


def _job_options(rt: Runtime) -> dict[str, Any]:
    return {"timeout": int(rt.config.delivery.timeout * 4 + 30), "result_ttl": 0, "failure_ttl": 86400,
            "retry": JOB_RETRY}


def stage_delivery(pipe: Pipeline, rt: Runtime, dest: str, event: CanonicalEvent, *, tag: str = "",
                   extra: dict[str, Any] | None = None, ordered: bool = True) -> Any:
    """Add the commands that create a delivery to `pipe`; returns RQ enqueue data for its job.

    Creating is idempotent: a delivery already recorded keeps its record; the job checks the done marker.
    """
    job_id = uuid.uuid4().hex
    key, seq = _stage_record(pipe, rt, dest, event, tag, extra, ordered, job_id)
    return rt.queue.prepare_data(JOB, args=(key, seq), job_id=job_id, **_job_options(rt))


def stage_batch(pipe: Pipeline, rt: Runtime, items: list[tuple[str, CanonicalEvent]], chunk: int = 100) -> list[Any]:
    """Create ordered relay deliveries for (destination, event) pairs; one RQ job per `chunk` of them.

    One job per delivery would cap a worker at RQ's own job rate (~220/s here); a batch job hands all its
    attempts to the worker's executor at once.
    """
    jobs = []
    for start in range(0, len(items), chunk):
        job_id = uuid.uuid4().hex
        batch = [list(_stage_record(pipe, rt, dest, event, "", None, True, job_id))
                 for dest, event in items[start:start + chunk]]
        jobs.append(rt.queue.prepare_data(BATCH_JOB, args=(batch,), job_id=job_id, **_job_options(rt)))
    return jobs


def enqueue(rt: Runtime, key: str, seq: str, delay: float = 0.0) -> None:
    """Queue an attempt now or after `delay` seconds (RQ's scheduler enqueues it when due)."""
    opts = _job_options(rt)
    kwargs = {"job_timeout": opts.pop("timeout"), **opts}
    if delay > 0.05:
        when = datetime.fromtimestamp(rt.clock() + delay, UTC)
        job = rt.queue.enqueue_at(when, JOB, key, seq, **kwargs)
    else:
        job = rt.queue.enqueue(JOB, key, seq, **kwargs)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hset(JOBS, key, job.id)
    pipe.zadd(INFLIGHT, {key: rt.clock() + max(delay, 0.0) + rt.config.delivery.lease})
    pipe.execute()


def deliver(key: str, seq: str = "") -> str:
    """RQ job: one delivery attempt (handed to the worker's executor when it has one)."""
    return run_or_submit(runtime.current(), key, seq)


def deliver_batch(items: list[list[str]]) -> int:
    """RQ job: attempts for a batch of (key, seq) deliveries; returns how many were started or run."""
    rt = runtime.current()
    for key, seq in items:
        run_or_submit(rt, key, seq)
    return len(items)


def run_or_submit(rt: Runtime, key: str, seq: str) -> str:
    """Run the attempt now (no executor: tests, burst mode) or hand it to the executor."""
    if rt.executor is None:
        return attempt(rt, key, seq)
    if rt.executor.submit(split_key(key)[0], key, seq):
        return "submitted"
    enqueue(rt, key, seq, 1.0)  # its destination already has its cap of attempts in flight
    return "busy"


def attempt(rt: Runtime, key: str, seq: str = "") -> str:
    """Run one attempt of delivery `key` with the given runtime."""
    dest, event_id, _ = split_key(key)
    r = rt.redis
    if r.exists(done_key(key)):
        rec_seq = r.hget(record_key(key), "seq")
        _finish(rt, key, rec_seq.decode() if rec_seq is not None else seq, event_id)
        _forget(rt, key)
        return "already_done"
    record = {k.decode(): v.decode() for k, v in r.hgetall(record_key(key)).items()}
    if not record:
        if seq:
            _advance(rt, seq, event_id)
        _forget(rt, key)
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
        pipe = r.pipeline()
        pipe.rpush(parked_key(dest), json.dumps([key, seq]))
        pipe.zrem(INFLIGHT, key)  # the parked list holds it until `destinations resume`
        pipe.execute()
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
    lock = _Lock(r, key, lease)
    if not lock.acquire():
        return "locked"
    r.zadd(INFLIGHT, {key: rt.clock() + lease})
    try:
        return _run(rt, adapter, key, seq, event_id, record)
    finally:
        lock.release()


class _Lock:
    """A delivery's execution lock: held (TTL 2 x lease) and renewed every lease/3 while the attempt runs.

    An attempt may take longer than the lease (slow destination, several calls, a Redis outage while its
    outcome is being stored): renewing keeps a second worker from running it at the same time, while a
    SIGKILLed worker's lock still expires within 2 x lease so the reaper can re-run its delivery.
    """

    def __init__(self, r: redis.Redis, key: str, lease: float) -> None:
        self.r = r
        self.key = lock_key(key)
        self.token = uuid.uuid4().hex
        self.ttl_ms = max(1000, int(2 * lease * 1000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock (False if someone holds it) and start renewing it."""
        if not self.r.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._thread = threading.Thread(target=self._renew, name="delivery-lock", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 6000.0):
            try:
                self.r.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
            except redis.RedisError:
                continue  # Redis is down: the TTL covers 5/3 lease of outage; try again next round

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours (it expires on its own otherwise)."""
        self._stop.set()
        try:
            self.r.eval(_UNLOCK, 1, self.key, self.token)
        except redis.RedisError:
            log.warning("could not release delivery lock %s; it expires on its own", self.key)


def _forget(rt: Runtime, key: str) -> None:
    """The delivery is finished (done, dead, unknown) or parked: no deadline, no job to watch."""
    pipe = rt.redis.pipeline()
    pipe.zrem(INFLIGHT, key)
    pipe.hdel(JOBS, key)
    pipe.execute()


def _through_outage(rt: Runtime, write: Callable[[], object], what: str) -> None:
    """Run `write` (building its own pipeline each time), retrying while Redis is unreachable.

    Used for the done marker after a destination accepted a delivery: giving up would re-send it after
    Redis comes back. Bounded by max(lease, 30 s); the lock outlives that much of an outage.
    """
    deadline = time.monotonic() + max(30.0, rt.config.delivery.lease)
    delay = 0.05
    while True:
        try:
            write()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unavailable while storing %s (%s); retrying", what, type(exc).__name__)
            time.sleep(delay)
            delay = min(1.0, delay * 2)


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
        done_at = rt.clock()

        def store_done() -> None:
            pipe = r.pipeline()
            pipe.set(done_key(key), json.dumps({"remote_id": outcome.remote_id, "at": attempts[-1]["at"]}),
                     ex=retention)
            stats.count_delivery(pipe, dest, "ok")
            if not split_key(key)[2]:  # relay deliveries only: a follow-up fires days after its trigger arrived
                stats.observe(pipe, "end_to_end", done_at - event.received_at.timestamp())
            pipe.execute()

        _through_outage(rt, store_done, "a done marker")
        rt.breaker.success(dest)
        # The record goes last: until then the reaper can still find the sequence to advance.
        _finish(rt, key, seq, event_id)
        r.delete(record_key(key))
        _forget(rt, key)
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
    stats.count_delivery(rt.redis, split_key(key)[0], outcome)
    _finish(rt, key, seq, event_id)
    rt.redis.delete(record_key(key))  # last: until then the reaper can still find the sequence to advance
    _forget(rt, key)
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
    """Re-enqueue deliveries past their deadline that nothing will run any more; returns how many.

    Past its deadline a delivery is left alone while a live worker holds its lock or its RQ job is still
    queued or scheduled; a non-head of a piece's sequence waits for the head (whose completion starts it),
    and makes sure that head has a deadline too, so a stuck head is always found; a finished one (done
    marker or dead letter) whose worker died before starting the next of its piece gets that done now.
    """
    r = rt.redis
    now = rt.clock()
    lease = rt.config.delivery.lease
    count = 0
    for raw in r.zrangebyscore(INFLIGHT, "-inf", now, start=0, num=limit):
        key = raw.decode()
        event_id = split_key(key)[1]
        rec_seq = r.hget(record_key(key), "seq")
        seq = rec_seq.decode() if rec_seq is not None else ""
        if r.exists(done_key(key)) or r.hexists(dlq.DLQ, key) or rec_seq is None:
            if rec_seq is not None:
                _finish(rt, key, seq, event_id)
                r.delete(record_key(key))
            _forget(rt, key)
            continue
        if seq and r.eval(_WAITING, 2, INFLIGHT, seq, key, event_id, split_key(key)[0], now + lease):
            continue  # not its turn: looked at again later, and its head is watched meanwhile
        if r.exists(lock_key(key)) or _job_pending(rt, key):
            r.zadd(INFLIGHT, {key: now + lease})
            continue
        enqueue(rt, key, seq)
        count += 1
    return count


def keep_alive(rt: Runtime, keys: list[str]) -> None:
    """Push the deadlines of deliveries this process holds (waiting in its executor) past the next reap."""
    if keys:
        deadline = rt.clock() + rt.config.delivery.lease
        rt.redis.zadd(INFLIGHT, dict.fromkeys(keys, deadline), xx=True)


def _job_pending(rt: Runtime, key: str) -> bool:
    """True while the delivery's RQ job waits in the queue or the scheduler (not taken by a worker).

    A job a worker took off the queue (into RQ's intermediate list) is still `queued` until the worker
    starts it; if that worker was killed in between, the job is not pending any more.
    """
    from rq.job import Job

    job_id = rt.redis.hget(JOBS, key)
    if job_id is None:
        return False
    status = rt.redis.hget(Job.key_for(job_id.decode()), "status")
    if status not in PENDING_JOB_STATES:
        return False
    return status != b"queued" or rt.redis.lpos(rt.queue.intermediate_queue_key, job_id) is None


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
