"""`postrelay worker`: the ingest dispatcher and housekeeping loops in threads, RQ's worker in the main thread.

Loops (each in a daemon thread, each bounded by the stop event):
- dispatcher: reads the ingest stream, reclaims entries of dead consumers every `reclaim_every` seconds;
- housekeeping: heartbeat, re-enqueue deliveries whose lease expired (killed workers);
- followups: fires follow-ups when due;
- mailings: creates the pieces of queued mailings (`workers.mailings`).
RQ's SimpleWorker (no fork per job: about twice the throughput of the forking worker) runs delivery jobs, with
its scheduler for delayed retries.
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
from rq import SimpleWorker

from postrelay import keys
from postrelay.config import Config
from workers import deliveries, runtime
from workers.dispatcher import Dispatcher, EventHandler, RelayHandler
from workers.executor import DeliveryExecutor
from workers.followups import FollowupHandler, Scheduler
from workers.mailings import Creator
from workers.runtime import Runtime

log = logging.getLogger("postrelay.worker")
HEARTBEAT_EVERY = 5.0



def _periodic(stop: threading.Event, name: str, fn: Callable[[], object], interval: float) -> None:
    """Run `fn` every `interval` seconds; a loop whose `fn` returns a float sleeps that long instead."""
    while not stop.is_set():
        wait = interval
        try:
            result = fn()
            if isinstance(result, float):
                wait = min(interval, result)
        except Exception:
            log.exception("%s loop failed; retrying in %.0f s", name, interval)
        stop.wait(wait)


def _dispatch_loop(stop: threading.Event, dispatcher: Dispatcher, reclaim_every: float) -> None:
    last_reclaim = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() - last_reclaim > reclaim_every:
                dispatcher.reclaim()
                last_reclaim = time.monotonic()
            dispatcher.run_once()
        except Exception:
            log.exception("dispatcher failed; retrying in 1 s")
            stop.wait(1.0)


def heartbeat(rt: Runtime, name: str) -> None:
    """Record that this worker is alive (read by /readyz, /metrics and `postrelay status`)."""
    rt.redis.hset(keys.WORKER_HEARTBEATS, name, rt.clock())


def prune_heartbeats(rt: Runtime, older_than: float = 86400.0) -> int:
    """Forget workers silent for `older_than` seconds (each restart adds a name); returns how many."""
    now = rt.clock()
    gone = [k for k, v in rt.redis.hgetall(keys.WORKER_HEARTBEATS).items() if now - float(v) > older_than]
    return int(rt.redis.hdel(keys.WORKER_HEARTBEATS, *gone)) if gone else 0


def start_background(rt: Runtime, stop: threading.Event, claim_idle: float = 30.0) -> list[threading.Thread]:
    """Start the dispatcher, housekeeping and registered loops; returns their threads."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    handlers: list[EventHandler] = [RelayHandler(rt), FollowupHandler(rt)]
    dispatcher = Dispatcher(rt, handlers, consumer=name, claim_idle=claim_idle)
    prune_heartbeats(rt)

    def housekeeping() -> None:
        heartbeat(rt, name)
        if rt.executor is not None:
            deliveries.keep_alive(rt, rt.executor.held())
        deliveries.reap(rt)

    threads = [
        threading.Thread(target=_dispatch_loop, args=(stop, dispatcher, max(1.0, claim_idle / 2)),
                         name="dispatcher", daemon=True),
        threading.Thread(target=_periodic, args=(stop, "housekeeping", housekeeping, 2.0),
                         name="housekeeping", daemon=True),
    ]
    threads.append(threading.Thread(target=_periodic, args=(stop, "followups", Scheduler(rt).tick, 1.0),
                                    name="followups", daemon=True))
    threads.append(threading.Thread(target=_periodic, args=(stop, "mailings", Creator(rt).tick, 1.0),
                                    name="mailings", daemon=True))
    for t in threads:
        t.start()
    return threads


def run_worker(config: Config, burst: bool = False) -> None:
    """Run until SIGINT/SIGTERM: background loops plus the RQ worker for deliveries."""
    rt = runtime.install(runtime.from_config(config))
    if not burst:
        rt.executor = DeliveryExecutor(lambda key, seq: deliveries.attempt(rt, key, seq),
                                       config.delivery.concurrency, config.delivery.per_destination_concurrency)
    stop = threading.Event()
    threads = start_background(rt, stop, claim_idle=float(os.environ.get("POSTRELAY_CLAIM_IDLE", "30")))
    try:
        _work(rt, burst)
    finally:
        if rt.executor is not None:
            rt.executor.shutdown(timeout=config.delivery.lease)
        stop.set()
        for t in threads:
            t.join(timeout=5)
        rt.close()


def _stop_requested(worker: SimpleWorker) -> bool:
    return bool(worker._stop_requested or worker._shutdown_requested_date is not None)


def _work(rt: Runtime, burst: bool) -> None:
    """RQ's work loop, started again after a Redis outage until SIGTERM/SIGINT (or an empty queue in burst mode).

    RQ's worker quits its loop (and `work()` returns normally) on a Redis error outside its dequeue call, e.g.
    while Redis restarts; the process would then exit 0, which `Restart=on-failure` never restarts.
    """
    stopping = threading.Event()
    while True:
        worker = SimpleWorker([rt.queue], connection=rt.redis, job_monitoring_interval=10)
        worker.max_connection_wait_time = 5.0  # RQ backs off up to 60 s between reconnects by default
        try:
            worker.work(with_scheduler=True, burst=burst, logging_level="WARNING")
        except redis.RedisError as exc:  # its teardown could not reach Redis either
            log.warning("RQ worker teardown failed: %s", type(exc).__name__)
        if burst or _stop_requested(worker):
            return
        log.error("RQ worker loop ended unexpectedly (Redis outage?); restarting it once Redis answers")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
        while not stopping.is_set():
            try:
                rt.redis.ping()
                break
            except redis.RedisError:
                stopping.wait(0.5)
        if stopping.is_set():
            return
