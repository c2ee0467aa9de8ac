"""The worker's delivery executor: bounded concurrency, a per-destination cap with a waiting line."""

from __future__ import annotations

import threading
import time

from workers.executor import DeliveryExecutor


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
