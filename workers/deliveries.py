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
import os
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
from postrelay import keys, stats
from postrelay.events import CanonicalEvent
from postrelay.logs import log_fields
from postrelay.stores import deliveries as store
from postrelay.stores import dlq
from workers import runtime
from workers.policy import next_attempt
from workers.runtime import Runtime

log = logging.getLogger("postrelay.delivery")
INFLIGHT = keys.DELIVERIES_DUE
JOBS = keys.DELIVERY_JOBS
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
# Lua: pop `event_id` (and copies of it, a re-staged duplicate) off the head of sequence list `seq`; returns
# the new head (false when the list is empty). The head moves only when it is this event.
_POP_HEAD = """
local function pop_head(seq, event_id)
  local h = redis.call('LINDEX', seq, 0)
  if h == event_id then
    redis.call('LPOP', seq)
    while redis.call('LINDEX', seq, 0) == event_id do redis.call('LPOP', seq) end
    h = redis.call('LINDEX', seq, 0)
  end
  return h
end
"""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
# Two scripts make the common attempt two round trips (plus the HTTP call). Their keys span several slots
# (a delivery's `{K}` keys, its sequence, its destination's pause flag and breaker, the shared zsets): fine,
# Redis Cluster is not supported (docs/operations.md).
# KEYS: done, record, memo, lock, inflight, seq (or the record key when unordered), paused, breaker.
# ARGV: event id, seq, lock token, lock ttl ms, deadline, delivery key, may lock ('1'/'0').
# Returns {'done', seq} | {'unknown'} | {'seq', seq} (the record names another sequence: call again with it)
# | {'waiting'} | {'slow', record} (paused, breaker not closed, rate limited, no adapter: the Python path
# decides) | {'locked'} | {'run', record, memo} (the lock is taken and the deadline set).
_PREPARE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'done', redis.call('HGET', KEYS[2], 'seq') or ARGV[2]} end
local rec = redis.call('HGETALL', KEYS[2])
if #rec == 0 then return {'unknown'} end
local rseq = redis.call('HGET', KEYS[2], 'seq')
if rseq and rseq ~= ARGV[2] then return {'seq', rseq} end
if ARGV[2] ~= '' and redis.call('LINDEX', KEYS[6], 0) ~= ARGV[1] then return {'waiting'} end
if ARGV[7] ~= '1' or redis.call('EXISTS', KEYS[7]) == 1 then return {'slow', rec} end
local state = redis.call('HGET', KEYS[8], 'state')
if state and state ~= 'closed' then return {'slow', rec} end
if not redis.call('SET', KEYS[4], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'locked'} end
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
return {'run', rec, redis.call('HGETALL', KEYS[3])}
"""
# A success, atomically: done marker, stats, breaker closed, sequence advanced (the next head gets a
# deadline), record deleted, delivery forgotten, lock released if still ours. Returns the next head or ''.
# KEYS: done, record, lock, inflight, jobs, breaker, probe, seq (or the record key), then one per stats op.
# ARGV: done json, retention, key, token, cooldown, event id, seq, destination, next deadline, stats ops
# count, then (command, field, amount) per stats op.
_COMPLETE_OK = _POP_HEAD + """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local n = tonumber(ARGV[10])
for i = 1, n do
  local a = 10 + (i - 1) * 3
  redis.call(ARGV[a + 1], KEYS[8 + i], ARGV[a + 2], ARGV[a + 3])
end
local cb = redis.call('HMGET', KEYS[6], 'state', 'failures', 'cooldown')
if cb[1] and not (cb[1] == 'closed' and cb[2] == '0' and cb[3] == ARGV[5]) then
  redis.call('HSET', KEYS[6], 'state', 'closed', 'failures', 0, 'cooldown', ARGV[5])
end
redis.call('DEL', KEYS[7])
local head = ''
if ARGV[7] ~= '' then
  local h = pop_head(KEYS[8], ARGV[6])
  if h then
    head = h
    redis.call('ZADD', KEYS[4], ARGV[9], ARGV[8] .. '|' .. h)
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return head
"""
JOB = "workers.deliveries.deliver"
BATCH_JOB = "workers.deliveries.deliver_batch"
# Only for infrastructure errors inside the job (e.g. Redis failing over mid-attempt): adapter failures are
# handled by postrelay's own retry policy and never raise.
JOB_RETRY = Retry(max=6, interval=[2, 10, 30, 120, 600, 1800])

# KEYS: seq list. ARGV: event id. Pops the head if it is this event, returns the new head (or '').
_ADVANCE = _POP_HEAD + """
return pop_head(KEYS[1], ARGV[1]) or ''
"""


delivery_key = store.delivery_key
split_key = store.split_key
record_key = keys.delivery_record
done_key = keys.delivery_done
memo_key = keys.delivery_memo
lock_key = keys.delivery_lock
seq_key = store.seq_key
paused_key = keys.destination_paused
parked_key = keys.destination_parked


def _stage_record(pipe: Pipeline, rt: Runtime, dest: str, event: CanonicalEvent, tag: str,
                  extra: dict[str, Any] | None, ordered: bool, job_id: str, event_json: str | None = None
                  ) -> tuple[str, str]:
    """Add the commands that record one delivery (idempotently) to `pipe`; returns (key, seq).

    `job_id` names the RQ job that will run it; '' when the worker's own executor runs it.
    """
    key = delivery_key(dest, event.id, tag)
    seq = seq_key(dest, event) if ordered else ""
    rec = record_key(key)
    pipe.hsetnx(rec, "event", event_json or event.model_dump_json())
    pipe.hsetnx(rec, "created", rt.clock())
    pipe.hsetnx(rec, "seq", seq)
    if extra:
        pipe.hsetnx(rec, "extra", json.dumps(extra))
    if seq:
        pipe.rpush(seq, event.id)
    if job_id:
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


def stage_local(pipe: Pipeline, rt: Runtime, items: list[tuple[str, CanonicalEvent]]) -> list[tuple[str, str]]:
    """Record ordered relay deliveries for (destination, event) pairs that this process's executor will run.

    No RQ job: once the transaction commits, the caller hands each (key, seq) to `run_or_submit`. Should the
    process die first, the deliveries' deadlines in `pr:dlv:inflight` bring them back through the reaper.
    """
    dumped: dict[str, str] = {}
    out = []
    for dest, event in items:
        if event.id not in dumped:
            dumped[event.id] = event.model_dump_json()
        out.append(_stage_record(pipe, rt, dest, event, "", None, True, "", dumped[event.id]))
    return out


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


def _decode_pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def attempt(rt: Runtime, key: str, seq: str = "") -> str:
    """Run one attempt of delivery `key` with the given runtime."""
    dest, event_id, _ = split_key(key)
    r = rt.redis
    adapter = rt.adapters.get(dest)
    lease = rt.config.delivery.lease
    lock = _Lock(r, key, lease)
    may_lock = "1" if adapter is not None and not rt.rates.get(dest) else "0"
    prepare = r.register_script(_PREPARE)
    rec_key = record_key(key)
    for _ in range(2):
        res = prepare(keys=[done_key(key), rec_key, memo_key(key), lock.key, INFLIGHT, seq or rec_key,
                            paused_key(dest), keys.circuit(dest)],
                      args=[event_id, seq, lock.token, lock.ttl_ms, rt.clock() + lease, key, may_lock])
        if res[0] != b"seq":
            break
        seq = res[1].decode()  # the record's own sequence wins over the job's argument
    else:
        return "waiting_for_turn"  # the record changed its sequence twice meanwhile: the reaper looks again
    status = res[0].decode()
    if status == "done":
        _finish(rt, key, res[1].decode(), event_id)
        _forget(rt, key)
        return "already_done"
    if status == "unknown":
        if seq:
            _advance(rt, seq, event_id)
        _forget(rt, key)
        return "unknown"
    if status == "waiting":
        return "waiting_for_turn"  # the delivery ahead of it will start this one when it finishes
    if status == "locked":
        return "locked"
    record = _decode_pairs(res[1])
    if status == "run":
        lock.adopt()
        try:
            return _run(rt, adapter, key, seq, event_id, record, lock, _decode_pairs(res[2]))
        finally:
            lock.release()
    # The uncommon path (no adapter, paused, breaker not closed, rate limited): one check at a time.
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
    if not lock.acquire():
        return "locked"
    r.zadd(INFLIGHT, {key: rt.clock() + lease})
    try:
        memo = {k.decode(): v.decode() for k, v in r.hgetall(memo_key(key)).items()}
        return _run(rt, adapter, key, seq, event_id, record, lock, memo)
    finally:
        lock.release()


class _Renewer:
    """One daemon thread per process renewing every held delivery lock every ttl/6 (a thread per attempt
    would cost more than the attempt's Redis work)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: dict[int, tuple[redis.Redis, str, str, int, float]] = {}  # id(lock) -> (r, key, token, ttl, due)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, lock: _Lock) -> None:
        with self._cond:
            self._held[id(lock)] = (lock.r, lock.key, lock.token, lock.ttl_ms, time.monotonic() + lock.ttl_ms / 6000.0)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="delivery-locks", daemon=True)
                self._thread.start()

    def remove(self, lock: _Lock) -> None:
        with self._cond:
            self._held.pop(id(lock), None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(k, v) for k, v in self._held.items() if v[4] <= now]
                for k, (r, key, token, ttl, _) in due:
                    self._held[k] = (r, key, token, ttl, now + ttl / 6000.0)
                nxt = min((v[4] for v in self._held.values()), default=now + 1.0)
            by_client: dict[int, list[tuple[redis.Redis, str, str, int]]] = {}
            for _, (r, key, token, ttl, _) in due:
                by_client.setdefault(id(r), []).append((r, key, token, ttl))
            for group in by_client.values():
                try:
                    pipe = group[0][0].pipeline(transaction=False)
                    for _, key, token, ttl in group:
                        pipe.eval(_RENEW, 1, key, token, ttl)
                    pipe.execute()
                except redis.RedisError:
                    continue  # Redis is down: the TTL covers 5/3 lease of outage; try again next round
            time.sleep(max(0.01, min(0.1, nxt - time.monotonic())))


_RENEWER = _Renewer()


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
        self.held = False

    def acquire(self) -> bool:
        """Take the lock (False if someone holds it) and start renewing it."""
        if not self.r.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self.adopt()
        return True

    def adopt(self) -> None:
        """The lock was taken with this token (by a script): renew it from now on."""
        self.held = True
        _RENEWER.add(self)

    def released(self) -> None:
        """A script deleted the lock (if still ours): stop renewing."""
        self.held = False
        _RENEWER.remove(self)

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours (it expires on its own otherwise)."""
        if not self.held:
            return
        self.released()
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


def _run(rt: Runtime, adapter: Any, key: str, seq: str, event_id: str, record: dict[str, str], lock: _Lock,
         memo: dict[str, str]) -> str:
    dest = adapter.name
    r = rt.redis
    event = CanonicalEvent.model_validate_json(record["event"])
    attempts: list[dict[str, Any]] = json.loads(record.get("attempts", "[]"))
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

        ops = _StatsOps()
        stats.count_delivery(ops, dest, "ok")
        if not split_key(key)[2]:  # relay deliveries only: a follow-up fires days after its trigger arrived
            stats.observe(ops, "end_to_end", done_at - event.received_at.timestamp())
        done = json.dumps({"remote_id": outcome.remote_id, "at": attempts[-1]["at"]})
        complete = r.register_script(_COMPLETE_OK)
        head: list[Any] = []

        def store_done() -> None:
            head[:] = [complete(
                keys=[done_key(key), record_key(key), lock.key, INFLIGHT, JOBS, keys.circuit(dest),
                      keys.circuit_probe(dest), seq or record_key(key), *ops.keys],
                args=[done, retention, key, lock.token, rt.config.delivery.circuit_cooldown, event_id, seq,
                      _seq_dest(seq), rt.clock() + rt.config.delivery.lease, len(ops.keys), *ops.args])]

        _through_outage(rt, store_done, "a done marker")
        lock.released()
        nxt = head[0].decode() if isinstance(head[0], bytes) else head[0]
        if nxt:
            _start(rt, seq, nxt)
        log_fields(log, logging.INFO, "delivered", {**fields, "outcome": "ok", "remote_id": outcome.remote_id})
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
    log_fields(log, logging.INFO, "delivery failed; will retry",
               {**fields, "outcome": "retry", "detail": detail, "retry_in_s": round(decision.delay, 1)})
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
    pipe = rt.redis.pipeline()
    dlq.add(pipe, key, record, reason, attempts, rt.clock())
    pipe.execute()
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
        _start(rt, seq, head)


def _start(rt: Runtime, seq: str, head: str) -> None:
    """Queue the delivery of `head`, the new head of sequence `seq`."""
    enqueue(rt, delivery_key(_seq_dest(seq), head), seq)


def _seq_dest(seq: str) -> str:
    return keys.seq_destination(seq)


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
