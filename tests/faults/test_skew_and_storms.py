"""Clock skew between provider and receiver, and duplicate storms (the same event 50 times, concurrently).

Real receiver and worker processes: skewed signatures within each source's tolerance are accepted and
delivered once; beyond it they are refused (401) and nothing is stored; 50 concurrent copies of one event
are accepted once (49 duplicates), recorded once in the timeline and delivered once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from postrelay.core import keys
from postrelay.core.timeline import load_piece
from tests.faults.conftest import Report, Rig, expected_deliveries
from tests.support.load import Sender, SendResult, make_events

TOLERANCE = 300.0  # generic and Lob default; PostGrid's default is 8 h (it retries after 1, 2 and 4 h)


def test_clock_skew_within_tolerance_is_accepted_beyond_is_refused(rig: Rig) -> None:
    rig.start(workers=1)
    events = make_events(40, pieces=8, secrets=rig.secrets, tag="sk")
    ahead, behind = events[:20], events[20:]
    results = []
    for batch, offset in ((ahead, TOLERANCE - 20), (behind, -(TOLERANCE - 20))):
        results.append(Sender(rig.receiver.url, threads=4, rate=0, clock_offset=offset).run(batch))
    accepted = results[0].accepted | results[1].accepted
    assert accepted == {ev.canonical_id for ev in events}
    expected = expected_deliveries(events, accepted)
    assert rig.wait_delivered(expected, timeout=30)

    # beyond the tolerance: refused, nothing stored (PostGrid's window is 8 h, so only generic and Lob here)
    late = [ev for ev in make_events(40, pieces=8, secrets=rig.secrets, tag="sl") if ev.source != "postgrid"]
    before = rig.redis.xlen(keys.INGEST_STREAM) + len(rig.sinks["crm"].records)
    for offset in (TOLERANCE + 30, -(TOLERANCE + 30)):
        with httpx.Client(base_url=rig.receiver.url, timeout=5) as client:
            for ev in late[:10]:
                resp = client.post(ev.path, content=ev.body, headers=ev.sign(ev.body, time.time() + offset))
                assert resp.status_code == 401, resp.text
                assert resp.json()["error"] == "timestamp_out_of_tolerance"
    time.sleep(1.0)
    assert rig.redis.xlen(keys.INGEST_STREAM) + len(rig.sinks["crm"].records) == before
    report = rig.check("clock_skew", events, len(events), SendResult(accepted=accepted),
                       {"skew_s": TOLERANCE - 20, "refused_beyond": 20})
    assert report.lost == 0 and report.duplicated == 0


def test_duplicate_storm_same_event_50_times_concurrently(rig: Rig) -> None:
    rig.start(workers=2)
    events = make_events(8, pieces=8, secrets=rig.secrets, tag="ds")  # one per provider mix
    copies = 50
    counts = {"accepted": 0, "duplicates": 0, "other": 0}

    # one client shared by the threads (httpx.Client is thread-safe), one connection per concurrent copy
    client = httpx.Client(base_url=rig.receiver.url, timeout=10, limits=httpx.Limits(max_connections=copies))

    def post(ev):  # type: ignore[no-untyped-def]
        return client.post(ev.path, content=ev.body, headers=ev.sign(ev.body, time.time()))

    with client, ThreadPoolExecutor(copies) as pool:
        for ev in events:
            for resp in pool.map(post, [ev] * copies):
                if resp.status_code != 200:
                    counts["other"] += 1
                    continue
                body = resp.json()
                counts["accepted"] += body["accepted"]
                counts["duplicates"] += body["duplicates"]
    assert counts == {"accepted": len(events), "duplicates": len(events) * (copies - 1), "other": 0}
    accepted = {ev.canonical_id for ev in events}
    assert rig.wait_delivered(expected_deliveries(events, accepted), timeout=30)
    time.sleep(1.5)
    report = rig.check("duplicate_storm", events, len(events) * copies, SendResult(accepted=accepted),
                       {"copies_each": copies, "answered_duplicate": counts["duplicates"]})
    assert report.lost == 0 and report.duplicated == 0
    assert report.extra["unexpected"] == 0
    for ev in events:
        assert len(load_piece(rig.redis, ev.source, ev.piece)["events"]) == 1


def test_report_line_format() -> None:
    assert Report("x", 3, 3, 0, 0, {"k": 1}).line() == "x: sent=3 accepted=3 lost=0 duplicated=0 (k=1)"
