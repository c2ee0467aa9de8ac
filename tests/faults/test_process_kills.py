"""Receiver and worker processes SIGKILLed at random points during a load: zero lost, zero duplicated.

Receiver kills land anywhere (the sender sees refused/reset connections and retries). Worker kills land at a
random moment while the destinations hold their answers: the killed worker may be mid-request (the
request is abandoned and legitimately re-sent with the same webhook-id), mid-dispatch (timeline applied,
ack transaction not yet run), between claiming a delivery and locking it, or idle. What the test never does
is kill a worker between a destination's 2xx and the worker's done-marker write: that residual window is
measured in tests/faults/test_due_time.py (median 1-2 ms), stated in docs/guarantees.md, and is why the
webhook adapter sends a stable `webhook-id` for receivers to dedupe on.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from tests.faults.conftest import Rig, expected_deliveries, soak
from tests.support.load import Sender, make_events
from tests.support.sink import Behaviour


def _chaos(rig: Rig, stop: threading.Event, rng: random.Random, counts: dict[str, int], every: float) -> None:
    i = 0
    while not stop.wait(rng.uniform(every * 0.5, every * 1.5)):
        i += 1
        if i % 3 == 1:  # receiver, workers, workers, receiver, ...
            rig.receiver.kill()
            counts["receiver_kills"] += 1
            time.sleep(rng.uniform(0.05, 0.4))
            rig.receiver.start()
            continue
        victims = [w for w in rig.workers if rng.random() < 0.6] or [rng.choice(rig.workers)]
        for sink in rig.sinks.values():
            sink.hold()
        time.sleep(0.25)  # 2xx answers that went out before the hold are stored by now
        time.sleep(rng.uniform(0.0, 0.4))  # a random point inside the dispatcher, RQ, or a held request
        for w in victims:
            w.kill()
        counts["worker_kills"] += len(victims)
        for sink in rig.sinks.values():
            sink.release()
        time.sleep(rng.uniform(0.1, 0.8))
        for w in victims:
            w.start()


@pytest.mark.soak
def test_receiver_and_workers_sigkilled_during_load(rig: Rig) -> None:
    n = soak(300, 3000)
    rate = soak(50, 100)
    for sink in rig.sinks.values():
        sink.behaviour = lambda wid, k: Behaviour(delay=0.01)
    rig.start(workers=2)
    events = make_events(n, pieces=max(10, n // 10), secrets=rig.secrets, tag="pk")
    sender = Sender(rig.receiver.url, threads=6, rate=rate)
    seed = int(os.environ.get("POSTRELAY_FAULT_SEED", time.time()))
    counts = {"receiver_kills": 0, "worker_kills": 0, "seed": seed}
    stop = threading.Event()
    chaos = threading.Thread(target=_chaos, args=(rig, stop, random.Random(seed), counts, 0.9), daemon=True)
    thread = sender.start(events)
    chaos.start()
    thread.join(soak(120, 600))
    stop.set()
    chaos.join(30)
    assert not thread.is_alive(), "the sender did not finish"
    if not rig.receiver.alive:
        rig.receiver.start()
    for w in rig.workers:
        if not w.alive:
            w.start()
    result = sender.result
    expected = expected_deliveries(events, result.accepted)
    delivered = rig.wait_delivered(expected, timeout=soak(60, 180))
    time.sleep(2.5)  # a late re-send would show up as a duplicate now
    report = rig.check("process_sigkill", events, sender.sent, result,
                       {**counts, "refused": result.statuses.get("conn", 0), "500s": result.statuses.get("500", 0)})
    assert counts["worker_kills"] > 0 and counts["receiver_kills"] > 0, counts
    assert result.statuses.get("500", 0) == 0
    assert not result.rejected and not result.gave_up
    assert report.sent == report.accepted == n
    assert delivered, f"deliveries missing: {report.line()}\n" + "\n".join(rig.diagnose())
    assert report.lost == 0 and report.duplicated == 0, f"{report.line()}\n{rig.problems[:20]}"
    assert report.extra["unexpected"] == 0
