"""The worker's delivery executor: bounded concurrency, a per-destination cap with a waiting line."""

from __future__ import annotations

import threading
import time

from postrelay.workers.executor import DeliveryExecutor


def test_a_hanging_destination_holds_only_its_cap_and_others_flow():
    release = threading.Event()
    ran: list[str] = []
    lock = threading.Lock()

    def run(key: str, seq: str) -> None:
        if key.startswith("slow|"):
            release.wait(5)
        with lock:
            ran.append(key)

    ex = DeliveryExecutor(run, max_in_flight=4, per_destination=2, max_waiting=3)
    try:
        assert all(ex.submit("slow", f"slow|{i}", "") for i in range(5))  # 2 running, 3 waiting in line
        assert ex.submit("slow", "slow|5", "") is False  # the line is full: the caller reschedules
        assert sorted(ex.held()) == ["slow|2", "slow|3", "slow|4"]
        for i in range(20):  # a full line refuses (the caller would reschedule): offer again until taken
            deadline = time.monotonic() + 5
            while not ex.submit("fast", f"fast|{i}", "") and time.monotonic() < deadline:
                time.sleep(0.001)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(k.startswith("fast|") for k in ran) < 20:
            time.sleep(0.01)
        assert sum(k.startswith("fast|") for k in ran) == 20  # not blocked behind the hanging destination
        assert not any(k.startswith("slow|") for k in ran)
        release.set()
        assert ex.wait_idle(5)
        assert sorted(k for k in ran if k.startswith("slow|")) == [f"slow|{i}" for i in range(5)]
        assert ex.held() == [] and ex.in_flight == 0
    finally:
        release.set()
        ex.shutdown(1)


def test_an_attempt_that_raises_frees_its_slots():
    def run(key: str, seq: str) -> None:
        raise RuntimeError("boom")

    ex = DeliveryExecutor(run, max_in_flight=1, per_destination=1)
    try:
        for i in range(3):
            assert ex.submit("d", f"d|{i}", "")
            assert ex.wait_idle(2)
        assert ex.in_flight == 0
    finally:
        ex.shutdown(1)


def test_room_shrinks_while_a_moving_line_fills_and_ignores_a_stalled_one():
    release = threading.Event()
    ex = DeliveryExecutor(lambda key, seq: release.wait(5), max_in_flight=8, per_destination=2, max_waiting=5,
                          hold=0.3)
    try:
        assert ex.room(100) == 7  # what one destination can take: 2 running + 5 waiting
        for i in range(5):  # 2 run, 3 wait
            assert ex.submit("a", f"a|{i}", "")
        assert ex.room(100) == 2  # the line holds 3 of 5: take no more than fits
        assert all(ex.submit("a", f"a|{i}", "") for i in (5, 6))
        assert ex.room(100) == 0  # full and (as far as we know) moving: the dispatcher waits
        time.sleep(0.35)  # nothing left the line for `hold` seconds: a slow destination
        assert ex.room(100) == 7  # ... which must not hold back every other destination
        assert ex.submit("a", "a|7", "") is False  # its own excess is refused (the caller reschedules it)
    finally:
        release.set()
        assert ex.wait_idle(5)
        ex.shutdown(1)


def test_wait_for_room_wakes_when_the_line_moves():
    gate = threading.Semaphore(0)
    ex = DeliveryExecutor(lambda key, seq: gate.acquire(timeout=5), max_in_flight=2, per_destination=1,
                          max_waiting=1)
    try:
        assert ex.submit("a", "a|0", "") and ex.submit("a", "a|1", "")
        assert ex.room(10) == 0
        gate.release()  # a|0 finishes, a|1 leaves the line
        started = time.monotonic()
        ex.wait_for_room(2.0)
        assert time.monotonic() - started < 1.0 and ex.room(10) == 1  # a|1 runs, the line has room for one
    finally:
        for _ in range(3):
            gate.release()
        ex.shutdown(1)


def test_attempts_starting_next_updates_in_a_full_pool_do_not_wait_for_a_slot():
    """Two destinations, one attempt each, pool of 2: each finishing attempt starts its piece's next update
    (its destination has a free slot, the pool has none). Waiting for a pool slot would deadlock: every slot
    is held by an attempt doing the same. With block=False it is refused, and the caller makes it due."""
    both = threading.Barrier(2, timeout=5)
    results: dict[str, bool] = {}
    ex: DeliveryExecutor

    def run(key: str, seq: str) -> None:
        if key.endswith("|1"):
            both.wait()  # both first attempts hold a pool slot now
            dest = key.split("|")[0]
            results[dest] = ex.submit(dest, f"{dest}|2", "", block=False)
            both.wait()  # neither lets its slot go before both have tried

    ex = DeliveryExecutor(run, max_in_flight=2, per_destination=2)
    try:
        assert ex.submit("a", "a|1", "") and ex.submit("b", "b|1", "")
        assert ex.wait_idle(5), "the attempts deadlocked"
        assert results == {"a": False, "b": False}
        assert ex.submit("a", "a|2", "", block=False)  # a slot is free again
        assert ex.wait_idle(5)
    finally:
        ex.shutdown(1)
