"""Batched HubSpot writes through the worker (real Redis, a loopback HubSpot stand-in): per-item outcomes,
size limits, order per piece, collapse, the rate limiter driven by HubSpot's headers, 429, circuit, kills."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.stores import deliveries, dlq
from postrelay.workers.delivery import batch as batch_module
from postrelay.workers.delivery.batch import attempt_batch
from tests.faults.test_delivery_regressions import _stage_only
from tests.support.http_server import LocalHTTPServer, Reply
from tests.support.hubspot_standin import HubSpotStandIn
from tests.workers.conftest import FakeClock, dispatch, drain, event, promote, push, scheduled

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


def config(url: str, **dest: Any) -> dict[str, Any]:
    return {"destinations": {"crm": {"type": "hubspot", "token": TOKEN, "base_url": url, "batch_size": 100,
                                     "batch_linger": "1 s", **dest}},
            "routes": [{"events": ["*"], "to": ["crm"]}],
            "delivery": {"base_delay": 1, "max_delay": 60, "circuit_threshold": 3, "lease": "5s"}}


def events(n: int, type: str = "processed_for_delivery", **kw: Any) -> list[CanonicalEvent]:
    return [event(type, piece=f"ltr_{i}", email=f"c{i}@example.com", **kw) for i in range(n)]


def done(rt: Any, evs: list[CanonicalEvent]) -> int:
    return sum(bool(rt.redis.exists(keys.delivery_done(deliveries.delivery_key("crm", e.id)))) for e in evs)


@pytest.fixture
def hubspot(clock: FakeClock):
    standin = HubSpotStandIn(clock=clock)
    with LocalHTTPServer(standin) as server:
        standin.url = server.url  # type: ignore[attr-defined]
        standin.server = server  # type: ignore[attr-defined]
        yield standin


def test_one_bad_item_among_100_is_dead_lettered_alone_the_rest_succeed_once(make_runtime, hubspot):
    rt = make_runtime(config(hubspot.url))
    evs = events(100)
    hubspot.rejected_emails = {"c37@example.com"}
    push(rt, *evs)
    dispatch(rt)
    drain(rt)
    assert hubspot.calls == {"POST /crm/v3/objects/contacts/batch/upsert": 1, "POST /crm/v3/objects/notes/batch/create": 1}
    assert hubspot.batch_sizes == [100, 99]
    bad = evs[37]
    assert hubspot.notes == {e.id: 1 for e in evs if e is not bad}
    assert done(rt, evs) == 99
    [entry] = dlq.entries(rt.redis, "crm")
    assert entry["key"] == deliveries.delivery_key("crm", bad.id) and "c37@example.com is invalid" in entry["reason"]
    assert scheduled(rt) == [] and rt.redis.zcard(deliveries.DUE) == 0


def test_a_batch_larger_than_hubspots_limit_is_split(make_runtime, hubspot):
    rt = make_runtime(config(hubspot.url, batch_size=250))
    evs = events(250)
    push(rt, *evs)
    dispatch(rt)
    drain(rt)
    assert hubspot.batch_sizes == [100, 100, 50, 100, 100, 50]  # contacts in 3 requests, then notes in 3
    assert hubspot.throttled == 0 and hubspot.notes == {e.id: 1 for e in evs} and done(rt, evs) == 250


def test_a_whole_batch_rejected_for_one_input_is_bisected(make_runtime, hubspot):
    rt = make_runtime(config(hubspot.url, batch_size=8))
    evs = events(8)
    original = hubspot._answer

    def strict(req):  # like HubSpot for an invalid property value: the whole request is refused
        if req.path.endswith("/contacts/batch/upsert") and any(i["id"] == "c5@example.com" for i in req.json()["inputs"]):
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid"})
        return original(req)

    hubspot._answer = strict
    push(rt, *evs)
    dispatch(rt)
    drain(rt)
    assert hubspot.notes == {e.id: 1 for e in evs if e is not evs[5]} and done(rt, evs) == 7
    assert [e["key"] for e in dlq.entries(rt.redis, "crm")] == [deliveries.delivery_key("crm", evs[5].id)]


def test_a_pieces_events_go_in_order_across_batches(make_runtime, hubspot, clock):
    rt = make_runtime(config(hubspot.url, batch_size=4))
    t0 = datetime.fromisoformat("2026-11-20T10:00:00+00:00")
    piece = [event(t, piece="ltr_p", email="p@example.com", occurred=(t0 + timedelta(hours=h)).isoformat())
             for h, t in enumerate(["mailed", "in_transit", "processed_for_delivery", "delivered"])]
    others = events(6)
    push(rt, *piece, *others)
    dispatch(rt)
    drain(rt)
    note_batches = [[_event_id(i) for i in r.json()["inputs"]] for r in hubspot.server.requests
                    if r.path.endswith("/notes/batch/create")]
    where = [next(n for n, ids in enumerate(note_batches) if e.id in ids) for e in piece]
    assert where == sorted(where) and len(set(where)) == 4  # one of the piece's updates per batch, in order
    assert hubspot.notes == {e.id: 1 for e in piece + others}
    contact = hubspot.contacts["p@example.com"]
    assert hubspot.properties[contact]["postrelay_last_mail_event"] == "delivered"


def test_several_updates_of_one_contact_in_one_batch_collapse_into_the_latest(make_runtime, hubspot):
    rt = make_runtime(config(hubspot.url, batch_size=10))
    early = event("delivered", piece="ltr_a", email="same@example.com", occurred="2026-11-20T09:00:00+00:00")
    late = event("mailed", piece="ltr_b", email="same@example.com", occurred="2026-11-21T09:00:00+00:00")
    middle = event("in_transit", piece="ltr_c", email="same@example.com", occurred="2026-11-20T12:00:00+00:00")
    push(rt, late, early, middle)
    dispatch(rt)
    drain(rt)
    [upsert] = [r.json()["inputs"] for r in hubspot.server.requests if r.path.endswith("/contacts/batch/upsert")]
    assert len(upsert) == 1 and upsert[0]["id"] == "same@example.com"
    assert upsert[0]["properties"]["postrelay_last_mail_event"] == "mailed"  # the latest occurrence wins
    assert upsert[0]["properties"]["postrelay_mail_event_at"].startswith("2026-11-21T09:00")
    assert hubspot.notes == {late.id: 1, early.id: 1, middle.id: 1} and done(rt, [early, late, middle]) == 3


def test_hubspot_rate_limit_headers_make_the_limiter_back_off_before_a_429(make_runtime, hubspot, clock):
    cfg = config(hubspot.url, batch_size=10)
    cfg["delivery"]["per_destination_concurrency"] = 1  # one call at a time: each answer teaches the next
    rt = make_runtime(cfg)
    evs = events(30)
    for _ in range(95):  # other integrations of the account spent 95 of the 100 requests of this window
        hubspot.stamps.append(clock.now)
    starts: list[float] = []
    original = hubspot._answer
    hubspot._answer = lambda req: (starts.append(clock.now), original(req))[1]
    push(rt, *evs)
    dispatch(rt)
    for _ in range(10):
        drain(rt)
        clock.advance(1)
    assert hubspot.throttled == 0 and hubspot.notes == {e.id: 1 for e in evs}
    assert starts[1] - starts[0] >= 1.5  # held after an answer said only 4 requests were left
    learned = rt.redis.hgetall(keys.rate_learned("crm"))
    assert float(learned[b"interval"]) == pytest.approx(100 / 0.9, rel=0.01)  # 100 per 10 s, paced at 90 %
    gaps = [b - a for a, b in itertools.pairwise(starts[3:])]
    assert all(gap >= 0.1 for gap in gaps)


def test_a_formed_batch_waits_in_its_thread_for_a_rate_slot_a_few_seconds_away(make_runtime, hubspot, clock):
    cfg = config(hubspot.url)
    cfg["delivery"]["lease"] = "60s"
    rt = make_runtime(cfg)
    evs = events(10)
    rt.redis.hset(keys.rate_learned("crm"), "hold_until", int((clock.now + 3) * 1000))  # the next slot: in 3 s
    push(rt, *evs)
    start = clock.now
    dispatch(rt)  # no due loop runs: the batch itself waited for its slot
    assert hubspot.notes == {e.id: 1 for e in evs} and done(rt, evs) == 10
    assert clock.now - start >= 3 and scheduled(rt) == []
    assert hubspot.calls["POST /crm/v3/objects/contacts/batch/upsert"] == 1


def test_429_with_retry_after_on_a_batch_retries_every_item_after_it(make_runtime, hubspot, clock):
    rt = make_runtime(config(hubspot.url))
    evs = events(100)
    hubspot.inject = [Reply(429, {"status": "error", "message": "slow down"}, {"Retry-After": "30"})]
    push(rt, *evs)
    dispatch(rt)
    drain(rt)
    due = scheduled(rt)
    assert len(due) == 100 and min(when for _, when in due) >= clock.now + 30
    assert float(rt.redis.hget(keys.rate_learned("crm"), "hold_until")) >= (clock.now + 30) * 1000 - 1
    clock.advance(31)
    promote(rt)
    drain(rt)
    assert hubspot.notes == {e.id: 1 for e in evs} and done(rt, evs) == 100
    assert hubspot.calls["POST /crm/v3/objects/contacts/batch/upsert"] == 2


def test_failed_batches_open_the_circuit_and_a_probe_batch_closes_it(make_runtime, hubspot, clock):
    rt = make_runtime(config(hubspot.url, batch_size=50))
    evs = events(50)
    hubspot.inject = [Reply(503, {"status": "error", "message": "down"})] * 3
    push(rt, *evs)
    dispatch(rt)
    for _ in range(3):  # three failed batches: three breaker failures (not 150)
        drain(rt)
        clock.advance(61)
        promote(rt)
    assert rt.breaker.state("crm", clock.now)["state"] in ("open", "half_open")
    assert hubspot.total_calls == 3
    rt.redis.hset(keys.circuit("crm"), "open_until", clock.now + 100)
    drain(rt)  # open: the deliveries wait without a call
    assert hubspot.total_calls == 3 and len(scheduled(rt)) == 50
    clock.advance(101)
    promote(rt)
    drain(rt)  # cooled down: one probe batch, which succeeds and closes the circuit
    assert rt.breaker.state("crm", clock.now)["state"] == "closed"
    assert hubspot.notes == {e.id: 1 for e in evs} and done(rt, evs) == 50


def test_killed_between_the_batch_answer_and_its_done_markers_logs_no_second_activity(make_runtime, hubspot,
                                                                                        clock, monkeypatch):
    cfg = config(hubspot.url)
    cfg["delivery"]["lease"] = "1s"
    rt = make_runtime(cfg)
    evs = events(20)
    push(rt, *evs)
    _stage_only(rt)
    items = [(deliveries.delivery_key("crm", e.id), deliveries.seq_key("crm", e)) for e in evs]

    def killed(*args: Any) -> None:
        raise SystemExit("SIGKILL")  # the process dies after the memos, before any done marker

    monkeypatch.setattr(batch_module, "store_successes", killed)
    # a dead process releases nothing and renews nothing: its locks expire (TTL 2 x lease)
    monkeypatch.setattr(batch_module.Lock, "release", lambda self: self.released())
    with contextlib.suppress(SystemExit):
        attempt_batch(rt, "crm", items, lambda key, seq: None)
    monkeypatch.undo()
    assert hubspot.notes == {e.id: 1 for e in evs} and done(rt, evs) == 0
    memo = rt.redis.hgetall(keys.delivery_memo(items[0][0]))
    assert set(memo) == {b"activity"}
    deadline = 100
    while done(rt, evs) < 20 and deadline:  # the locks expire (2 x lease), then the due loop runs them again
        clock.advance(2)
        promote(rt)
        drain(rt)
        deadline -= 1
        if done(rt, evs) < 20:
            time.sleep(0.1)
    assert done(rt, evs) == 20
    assert hubspot.notes == {e.id: 1 for e in evs}  # no second activity for any event
    assert hubspot.calls["POST /crm/v3/objects/notes/batch/create"] == 1


def _event_id(note_input: dict[str, Any]) -> str:
    body = note_input["properties"]["hs_note_body"]
    return json.loads(json.dumps(body)).rsplit("postrelay event: ", 1)[1]


def test_pipedrive_stays_per_event_and_follows_its_rate_limit_headers(make_runtime, clock):
    calls: list[float] = []

    def pipedrive(req):
        calls.append(clock.now)
        headers = {"x-ratelimit-limit": "40", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "2"}
        return Reply(201, {"success": True, "data": {"id": len(calls)}}, headers)

    with LocalHTTPServer(pipedrive) as server:
        cfg = {"destinations": {"pd": {"type": "pipedrive", "token": "pd-token-0000", "base_url": server.url}},
               "routes": [{"events": ["*"], "to": ["pd"]}], "delivery": {"per_destination_concurrency": 1}}
        rt = make_runtime(cfg)
        evs = [event("mailed", piece=f"ltr_{i}", metadata={"pipedrive_person_id": i + 1}) for i in range(3)]
        push(rt, *evs)
        dispatch(rt)
        for _ in range(5):
            drain(rt)
            clock.advance(1)
        assert [r.path for r in server.requests] == ["/api/v2/activities"] * 3  # one call per event, no batch
        assert all(b - a >= 1.3 for a, b in itertools.pairwise(calls))  # 1 of 40 left: held 2/3 of the window
        assert float(rt.redis.hget(keys.rate_learned("pd"), "interval")) == pytest.approx(2000 / 40 / 0.9, rel=0.01)


def test_batch_size_on_an_adapter_without_a_batch_api_is_a_config_error(make_runtime):
    from postrelay.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"destinations\.pd\.batch_size: pipedrive has no batch API"):
        make_runtime({"destinations": {"pd": {"type": "pipedrive", "token": "pd-token-0000", "batch_size": 50}},
                      "routes": [{"events": ["*"], "to": ["pd"]}]})


def test_deliveries_a_full_batcher_line_cannot_take_are_due_again_at_once_and_the_due_loop_does_not_spin(
        make_runtime, hubspot, clock):
    from postrelay.workers.delivery.due import DueLoop
    from postrelay.workers.worker import BUSY_RETRY
    from tests.workers.conftest import worker_for

    rt = make_runtime(config(hubspot.url, batch_size=2))
    w = worker_for(rt)
    w.batcher._busy = lambda dest: True  # no free attempt slot: the line (2 batches' worth) fills and stays
    items = [(deliveries.delivery_key("crm", f"mev_{i}"), "") for i in range(6)]
    assert w.submit_many(items) == 4
    assert sorted(scheduled(rt)) == [(key, clock.now + BUSY_RETRY) for key, _ in items[4:]]
    rt.redis.zadd(deliveries.DUE, {f"crm|mev_due{i}": clock.now - 1 for i in range(5)})
    offered: list[list[tuple[str, str]]] = []
    loop = DueLoop(rt, lambda batch: offered.append(batch) or 0, lambda: 3, batch=3)
    assert loop.tick() > 0 and len(offered[0]) == 3  # a full claim of which nothing started: no spin
    loop = DueLoop(rt, lambda batch: offered.append(batch) or len(batch), lambda: 2, batch=2)
    clock.advance(61)  # past the first claim's lease
    assert loop.tick() == 0.0  # a full claim that started: more may be due now
