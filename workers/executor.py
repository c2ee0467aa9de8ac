"""Concurrent delivery attempts inside one worker process.

Every attempt runs here: the dispatcher hands the relay deliveries it has just committed straight to this
executor of its own process, and the due-time loop (`workers.delivery.due`) hands it retries, follow-ups and
recovered work. A bounded thread pool (HTTP calls and Redis round trips wait on I/O, not on the GIL); each
thread stores its attempt's outcome itself, right after the destination answered (no completion queue).

- `max_in_flight` bounds all attempts at once; `submit` blocks while the pool is full, and the due loop
  claims no more than `free()` (backpressure: what this worker cannot run stays due for the others).
- `per_destination` bounds one destination's attempts, so a destination that hangs holds at most that many
  threads (until its circuit opens) and the others keep flowing; attempts over the cap wait in a bounded
  per-destination line in memory and run as soon as one of its attempts finishes (the worker keeps their
  deadlines fresh meanwhile, see `held`); past `max_waiting` the caller reschedules them.
- Backpressure: the dispatcher reads only `room()` stream entries, so a backlog waits in the stream (where
  any worker can take it) instead of in memory or in RQ. A destination whose line is full holds the
  dispatcher back only while its line moves (its oldest waiting attempt started waiting less than `hold`
  seconds ago); a slow destination's line does not stop the others, its excess attempts are rescheduled.
- Nothing is lost if the process dies: every delivery has a due score in `pr:dlv:inflight` (a lease
  deadline while this process holds it) and a lock only while it runs; when the lease runs out, any live
  worker's due loop claims it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("postrelay.executor")


class DeliveryExecutor:
    """A bounded pool with a per-destination cap."""

    def __init__(self, run: Callable[[str, str], object], max_in_flight: int = 32, per_destination: int = 8,
                 max_waiting: int = 200, hold: float = 1.0) -> None:
        self.run = run
        self.max_in_flight = max_in_flight
        self.per_destination = min(per_destination, max_in_flight)
        self.max_waiting = max_waiting
        self.hold = hold
        self._waiting: dict[str, deque[tuple[str, str, float]]] = defaultdict(deque)
        self._pending: dict[str, int] = defaultdict(int)  # running + waiting, per destination
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="delivery")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._dest_slots: dict[str, threading.BoundedSemaphore] = defaultdict(
            lambda: threading.BoundedSemaphore(self.per_destination))
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self.limit: Callable[[int], int] | None = None  # a further bound on `room`, set by the worker

    def submit(self, dest: str, key: str, seq: str, block: bool = True) -> bool:
        """Start an attempt (waiting for a free slot); False when `dest` already has its cap in flight (and its
        line is full) or, with `block=False`, when no slot is free now (an attempt starting its piece's next
        update must not wait for a slot held by attempts doing the same)."""
        with self._lock:
            dest_slot = self._dest_slots[dest]
            if not dest_slot.acquire(blocking=False):
                line = self._waiting[dest]
                if len(line) >= self.max_waiting:
                    return False
                line.append((key, seq, time.monotonic()))
                self._pending[dest] += 1
                return True
        if not self._slots.acquire(blocking=block):
            dest_slot.release()
            return False
        with self._lock:
            self._running += 1
            self._pending[dest] += 1
        try:
            self._pool.submit(self._attempt, dest, dest_slot, key, seq)
        except RuntimeError:  # shutting down
            self._done(dest_slot)
            raise
        return True

    def _attempt(self, dest: str, slot: threading.BoundedSemaphore, key: str, seq: str) -> None:
        dest_slot: threading.BoundedSemaphore | None = slot  # None once given back
        try:
            while True:
                try:
                    self.run(key, seq)
                except Exception:  # the deadline in pr:dlv:inflight brings the delivery back
                    log.exception("delivery attempt %s failed", key)
                with self._lock:  # keep the slots and run the destination's next waiting attempt
                    self._pending[dest] -= 1
                    line = self._waiting.get(dest)
                    if not line:
                        slot.release()  # under the lock: a submit now either gets the slot or sees us gone
                        dest_slot = None
                        break
                    key, seq, _ = line.popleft()
                    self._idle.notify_all()  # the line moved: a dispatcher waiting for room looks again
        finally:
            self._done(dest_slot)

    def busy(self, dest: str) -> bool:
        """True when `dest` has its cap of attempts running (or waiting): a new one would wait in its line."""
        with self._lock:
            return self._pending.get(dest, 0) >= self.per_destination

    def held(self) -> list[str]:
        """Keys of attempts waiting in a destination's line (their deadlines must stay fresh)."""
        with self._lock:
            return [key for line in self._waiting.values() for key, _, _ in line]

    def room(self, wanted: int) -> int:
        """How many new attempts (up to `wanted`) one destination could take now without overflowing its line.

        A destination takes `per_destination` running attempts plus `max_waiting` in its line; the busiest
        one bounds the room (0 while its line is full and moving). A line whose oldest attempt has waited
        `hold` seconds or more belongs to a slow destination and does not hold the others back.
        """
        now = time.monotonic()
        limit = self.per_destination + self.max_waiting
        wanted = min(wanted, limit)
        if self.limit is not None:  # e.g. the batcher's lines (`workers.batching`)
            wanted = self.limit(wanted)
        with self._lock:
            for dest, pending in self._pending.items():
                line = self._waiting.get(dest)
                if pending and not (line and now - line[0][2] >= self.hold):
                    wanted = min(wanted, limit - pending)
            return max(0, wanted)

    def wait_for_room(self, timeout: float) -> None:
        """Block until an attempt finishes or `timeout` passes."""
        with self._idle:
            self._idle.wait(timeout)

    def _done(self, dest_slot: threading.BoundedSemaphore | None) -> None:
        if dest_slot is not None:
            dest_slot.release()
        self._slots.release()
        with self._lock:
            self._running -= 1
            self._idle.notify_all()

    def free(self) -> int:
        """How many more attempts this executor could start now (running plus waiting under `max_in_flight`)."""
        with self._lock:
            waiting = sum(len(line) for line in self._waiting.values())
            return max(0, self.max_in_flight - self._running - waiting)

    @property
    def in_flight(self) -> int:
        """Attempts running now."""
        with self._lock:
            return self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no attempt runs (True) or `timeout` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Let running attempts finish (up to `timeout`), then stop the pool."""
        if not self.wait_idle(timeout):
            log.warning("%d delivery attempt(s) still running at shutdown; their leases bring them back", self.in_flight)
        self._pool.shutdown(wait=False, cancel_futures=True)
