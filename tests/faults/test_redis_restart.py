"""Redis SIGKILLed and restarted (AOF, appendfsync everysec) in the middle of a load of signed webhooks.

The sender retries on 503 / refused connections like a provider. After recovery: every event answered
200 is in its mailpiece timeline exactly once, and every routed delivery was answered 2xx exactly once.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Rig, expected_deliveries, soak
from tests.support.load import Sender, make_events
from tests.support.processes import wait_for


@pytest.mark.soak
def test_redis_killed_and_restarted_during_load(rig: Rig) -> None:
    n = soak(300, 3000)
    outages = soak(1, 4)
    rig.start(workers=2)
    events = make_events(n, pieces=max(10, n // 10), secrets=rig.secrets, tag="rk")
    sender = Sender(rig.receiver.url, threads=6, rate=soak(60, 120))
    thread = sender.start(events)
    load_time = n / soak(60, 120)
    for _ in range(outages):
        time.sleep(load_time / (outages + 1))
        rig.redis_server.stop(kill=True)  # SIGKILL: no shutdown, no final fsync
        time.sleep(1.0)
        rig.redis_server.start()  # same port and data dir: the AOF is replayed
    thread.join(180)
    assert not thread.is_alive(), "the sender did not finish"
    result = sender.result
    expected = expected_deliveries(events, result.accepted)
    delivered = rig.wait_delivered(expected, timeout=soak(60, 180))
    time.sleep(2.0)  # anything re-sent late would show up as a duplicate now
    report = rig.check("redis_kill_restart", events, sender.sent, result,
                       {"outages": outages, "503s": result.statuses.get("503", 0),
                        "refused": result.statuses.get("conn", 0), "500s": result.statuses.get("500", 0)})
    assert result.statuses.get("500", 0) == 0, rig.logs()[-4000:]
    assert result.statuses.get("503", 0) + result.statuses.get("conn", 0) > 0, "the outage was never observed"
    assert not result.rejected and not result.gave_up
    assert report.sent == report.accepted == n
    assert delivered, f"deliveries missing after recovery: {report.line()}\n" + "\n".join(rig.diagnose())
    assert report.lost == 0 and report.duplicated == 0, f"{report.line()}\n{rig.problems[:20]}"
    assert report.extra["unexpected"] == 0
    assert wait_for(lambda: all(w.alive for w in rig.workers), 1), "a worker exited during the Redis outage"
