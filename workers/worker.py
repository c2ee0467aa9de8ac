"""`postrelay worker`: one process, assembled in one place (`Worker`), with no child process.

Threads, each stopped by the stop event and each backing off on errors (0.1 s doubling to 5 s, logged once
per outage, not per try — a full or loading Redis answers PING but refuses writes, and must not be spun on):
- dispatcher: reads the ingest stream (no more than the executor has room for) and reclaims entries of dead
  consumers every `claim_idle / 2` seconds;
- due: claims deliveries whose due time has come — retries, circuit and rate-limit waits, re-queues at a
  destination's concurrency cap, replays, work of killed workers (`workers.delivery.due`);
- followups: fires follow-ups when due;
- mailings: creates the pieces of queued mailings (`workers.mailings`);
- batches: sends the batches of destinations with `batch_size > 1` when full or lingered (`workers.batching`);
- housekeeping: the heartbeat, and fresh lease deadlines for attempts waiting in the executor.
Every attempt runs in the executor's thread pool (`workers.executor`) through `workers.delivery.attempt`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import redis

from postrelay.core import keys
from postrelay.core.backoff import Backoff
from postrelay.core.config import Config, ConfigError
from postrelay.core.durations import parse_seconds
from postrelay.core.outage import is_outage
from postrelay.core.stores import deliveries
from postrelay.workers import runtime
from postrelay.workers.batching import BATCH, Batcher
from postrelay.workers.delivery import attempt
from postrelay.workers.delivery.batch import attempt_batch
from postrelay.workers.delivery.due import DueLoop, keep_alive
from postrelay.workers.dispatcher import Dispatcher, RelayHandler
from postrelay.workers.executor import DeliveryExecutor
from postrelay.workers.followups import FollowupHandler, Scheduler
from postrelay.workers.mailings import Creator
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.worker")
HEARTBEAT_EVERY = 2.0
BUSY_RETRY = 1.0  # a delivery whose destination has its cap of attempts waiting is due again after this
LOG_AGAIN_AFTER = 30.0  # a loop that keeps failing says so again after this many seconds


def heartbeat(rt: Runtime, name: str) -> None:
    """Record that this worker is alive (read by /readyz, /metrics and `postrelay status`)."""
    rt.redis.hset(keys.WORKER_HEARTBEATS, name, rt.clock())


def prune_heartbeats(rt: Runtime, older_than: float = 86400.0) -> int:
    """Forget workers silent for `older_than` seconds (each restart adds a name); returns how many."""
    now = rt.clock()
    gone = [k for k, v in rt.redis.hgetall(keys.WORKER_HEARTBEATS).items() if now - float(v) > older_than]
    return int(rt.redis.hdel(keys.WORKER_HEARTBEATS, *gone)) if gone else 0


def forget_heartbeat(rt: Runtime, name: str) -> None:
    """A cleanly stopped worker leaves the heartbeat hash (so `status` shows it neither alive nor stale)."""
    try:
        rt.redis.hdel(keys.WORKER_HEARTBEATS, name)
    except redis.RedisError:
        log.warning("could not remove this worker's heartbeat (Redis unavailable); it turns stale on its own")


def log_start(rt: Runtime, name: str) -> None:
    """One INFO line: which Redis, destinations and rules this worker runs with."""
    from postrelay.core.redaction import mask_url

    config = rt.config
    dests = ", ".join(f"{n} ({d.type})" for n, d in config.destinations.items()) or "none"
    log.info("worker started: redis %s, %d destination(s): %s; %d route(s), %d follow-up rule(s)",
             mask_url(config.server.queue_redis_url), len(config.destinations), dests, len(config.routes),
             len(config.followups), extra={"worker": name})


def run_loop(stop: threading.Event, name: str, step: Callable[[], object], interval: float,
             backoff: Backoff | None = None) -> None:
    """Call `step` until `stop`; sleep `interval` between calls (or the float `step` returns, if shorter).

    A failing step waits `backoff` (doubling up to its ceiling) and is logged when it starts failing, every
    `LOG_AGAIN_AFTER` seconds while it keeps failing, and when it recovers.
    """
    backoff = backoff or Backoff(0.1, 5.0)
    failing_since: float | None = None
    last_log = 0.0
    while not stop.is_set():
        try:
            result = step()
        except Exception as exc:
            now = time.monotonic()
            delay = backoff.next()
            if failing_since is None or now - last_log >= LOG_AGAIN_AFTER:
                outage = isinstance(exc, redis.RedisError) and is_outage(exc)
                since = "" if failing_since is None else f" (failing for {now - failing_since:.0f} s)"
                log.warning("%s loop: %s: %s%s; retrying with backoff up to %.0f s", name, type(exc).__name__,
                            str(exc)[:120], since, backoff.ceiling, exc_info=not outage)
                last_log = now
                failing_since = failing_since or now
            stop.wait(delay)
            continue
        if failing_since is not None:
            log.warning("%s loop recovered after %.1f s", name, time.monotonic() - failing_since)
            failing_since = None
        backoff.reset()
        wait = min(interval, result) if isinstance(result, float) else interval
        if wait > 0:
            stop.wait(wait)


class Worker:
    """One worker process's parts, wired explicitly: executor, dispatcher and its handlers, loops."""

    def __init__(self, rt: Runtime, name: str | None = None, claim_idle: float = 30.0) -> None:
        self.rt = rt
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.claim_idle = claim_idle
        d = rt.config.delivery
        self.executor = DeliveryExecutor(self.run_attempt, d.concurrency, d.per_destination_concurrency)
        dests = rt.config.destinations
        self.batcher = Batcher({n: rt.batching(n) for n in dests}, {n: c.batch_linger for n, c in dests.items()},
                               lambda dest, key: self.executor.submit(dest, key, ""), self.executor.busy, rt.clock,
                               feeding=self.feeding)
        self.executor.limit = self.batcher.room
        self.relay = RelayHandler(rt, self.submit_many)
        self.dispatcher = Dispatcher(rt, [self.relay, FollowupHandler(rt)], self.executor,
                                     consumer=self.name, claim_idle=claim_idle)
        every = bool(dests) and self.batcher.only(list(dests))  # no executor slot is any use to a claimed delivery
        self.due = DueLoop(rt, self.submit_many, lambda: (0 if every else self.executor.free()) + self.batcher.free())
        self.followups = Scheduler(rt)
        self.mailings = Creator(rt)
        self._last_reclaim = 0.0

    def run_attempt(self, key: str, seq: str) -> object:
        """The executor's job: one attempt (the one entry point, `workers.delivery.attempt`), or one batch."""
        if key.startswith(BATCH):
            dest, items = self.batcher.take(key)
            try:
                return attempt_batch(self.rt, dest, items, self.start_next)
            finally:
                self.batcher.done(key)
        return attempt(self.rt, key, seq, self.start_next)

    def feeding(self, dest: str) -> bool:
        """True while the dispatcher reads a backlog whose last batch brought deliveries for `dest`."""
        return self.dispatcher.behind and dest in self.relay.destinations

    def submit_many(self, items: list[tuple[str, str]]) -> int:
        """Hand deliveries (the dispatcher's, the due loop's) to the executor or their destination's batcher
        line; those at their destination's cap are made due again in `BUSY_RETRY` s, in one round trip.
        Returns how many started."""
        busy: dict[str, float] = {}
        for key, seq in items:
            dest = deliveries.split_key(key)[0]
            try:
                accepted = (self.batcher.add(dest, key, seq) if self.batcher.batches(dest)
                            else self.executor.submit(dest, key, seq))
            except RuntimeError:  # shutting down: its lease deadline brings it back for any worker
                return len(items) - len(busy)
            if not accepted:
                busy[key] = self.rt.clock() + BUSY_RETRY
        deliveries.schedule_many(self.rt.redis, busy)
        return len(items) - len(busy)

    def start_next(self, key: str, seq: str) -> None:
        """From inside an attempt: start its piece's next update now if a slot is free, else make it due now
        (never wait for a slot: every running attempt could be doing the same)."""
        dest = deliveries.split_key(key)[0]
        if self.batcher.batches(dest):
            if not self.batcher.add(dest, key, seq):
                deliveries.schedule(self.rt.redis, key, self.rt.clock() + BUSY_RETRY)
            return
        try:
            accepted = self.executor.submit(dest, key, seq, block=False)
        except RuntimeError:
            return
        if not accepted:
            deliveries.schedule(self.rt.redis, key, self.rt.clock())

    def dispatch_step(self) -> float:
        """Reclaim dead consumers' entries now and then, then read and process one batch."""
        if time.monotonic() - self._last_reclaim > max(1.0, self.claim_idle / 2):
            self.dispatcher.reclaim()
            self._last_reclaim = time.monotonic()
        self.dispatcher.run_once()
        return 0.0

    def housekeeping(self) -> None:
        """Heartbeat; keep the lease deadlines of attempts waiting in the executor's lines fresh."""
        heartbeat(self.rt, self.name)
        keep_alive(self.rt, [k for k in self.executor.held() if not k.startswith(BATCH)] + self.batcher.held())

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """Start every loop in its own daemon thread."""
        prune_heartbeats(self.rt)
        self.rt.redis.delete(keys.DELIVERY_JOBS)  # left by versions that ran deliveries as RQ jobs
        loops: list[tuple[str, Callable[[], object], float]] = [
            ("dispatcher", self.dispatch_step, 0.0), ("due", self.due.tick, 0.5),
            ("followups", self.followups.tick, 1.0), ("mailings", self.mailings.tick, 1.0),
            ("batches", self.batcher.tick, 0.05),
            ("housekeeping", self.housekeeping, HEARTBEAT_EVERY)]
        threads = [threading.Thread(target=run_loop, args=(stop, name, step, interval), name=name, daemon=True)
                   for name, step, interval in loops]
        for t in threads:
            t.start()
        return threads

    def drain(self, timeout: float = 60.0) -> None:
        """Run everything there is to do now, until a round finds nothing (`--burst`, and the tests)."""
        deadline = time.monotonic() + timeout
        while True:
            moved = (self.dispatcher.run_once(block_ms=1) + self.due.run_once() + self.followups.run_once()
                     + self.mailings.run_once() + self.batcher.flush_all())
            if not self.executor.wait_idle(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("delivery attempts still running after the drain timeout")
            if moved == 0 and not self.executor.held() and not self.batcher.held():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("work kept coming until the drain timeout")

    def shutdown(self, timeout: float) -> None:
        """Let running attempts finish (up to `timeout`); waiting ones come back through their leases."""
        self.executor.shutdown(timeout=timeout)


def run_worker(config: Config, burst: bool = False) -> None:
    """Run until SIGINT/SIGTERM (or, with `burst`, until nothing is left to do now)."""
    raw_idle = os.environ.get("POSTRELAY_CLAIM_IDLE", "30")
    try:
        claim_idle = parse_seconds(raw_idle)
    except ValueError as exc:
        raise ConfigError(f"$POSTRELAY_CLAIM_IDLE: {exc}") from None
    probe = runtime.connect_redis(config.server.queue_redis_url or "", max(5.0, config.server.redis_timeout))
    try:  # the worker's own client has no read timeout: a Redis that never answers would hang it, silently
        probe.ping()
    finally:
        probe.close()
    rt = runtime.from_config(config)
    worker = Worker(rt, claim_idle=claim_idle)
    stop = threading.Event()
    try:
        if burst:
            worker.drain(timeout=max(60.0, 4 * config.delivery.lease))
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        threads = worker.start(stop)
        log_start(rt, worker.name)
        while not stop.wait(1.0):
            pass
        worker.shutdown(timeout=config.delivery.lease)
        for t in threads:
            t.join(timeout=5)
        forget_heartbeat(rt, worker.name)
        log.info("worker stopped", extra={"worker": worker.name})
    finally:
        stop.set()
        rt.close()
