"""The stores the receiver's console, the CLI and the workers share: against a real Redis, no worker involved."""

from __future__ import annotations

import json

from postrelay.core import keys
from postrelay.core.config import parse_config
from postrelay.core.stores import deliveries, destinations, dlq, followups
from postrelay.core.stores.circuit import CircuitBreaker, state_name
from tests.workers.conftest import event

NOW = 1_780_000_000.0
CONFIG = parse_config({"server": {"redis_url": "redis://127.0.0.1:1"},
                       "destinations": {"hook": {"type": "webhook", "url": "https://example.com/h"}},
                       "routes": [{"events": ["*"], "to": ["hook"]}]})


def _stage(r, e, due=NOW, **kw):
    pipe = r.pipeline(transaction=True)
    key, seq = deliveries.stage(pipe, "hook", e, now=NOW, due=due, **kw)
    pipe.execute()
    return key, seq


def test_stage_is_idempotent_and_get_shows_the_record(redis_client):
    e = event()
    key, seq = _stage(redis_client, e, due=NOW + 5)
    _stage(redis_client, e, due=NOW + 5)
    assert redis_client.lrange(seq, 0, -1) == [e.id.encode(), e.id.encode()]  # a re-stage is popped as one
    got = deliveries.get(redis_client, key)
    assert got["state"] == "pending" and got["destination"] == "hook" and got["event_id"] == e.id
    assert got["event"]["id"] == e.id and got["attempts"] == [] and got["sequence"] == seq
    assert got["due"].startswith("2026-05-28T20:26:45")
    assert deliveries.get(redis_client, "hook|nothing") is None
    assert deliveries.backlog(redis_client) == {"hook": 1}


def test_due_counts_split_ready_scheduled_and_overdue(redis_client):
    deliveries.schedule_many(redis_client, {"hook|a": NOW - 120, "hook|b": NOW - 1, "hook|c": NOW + 30})
    assert deliveries.due_counts(redis_client, NOW, overdue_after=60) == {
        "ready": 2, "scheduled": 1, "overdue": 1, "oldest_overdue_s": 120.0}


def test_dlq_replay_makes_it_due_now_and_skips_what_was_delivered(redis_client):
    e1, e2 = event(piece="a"), event(piece="b")
    k1, k2 = deliveries.delivery_key("hook", e1.id), deliveries.delivery_key("hook", e2.id)
    pipe = redis_client.pipeline()
    dlq.add(pipe, k1, {"event": e1.model_dump_json()}, "HTTP 400", [{"status": 400}], NOW)
    dlq.add(pipe, k2, {"event": e2.model_dump_json(), "extra": json.dumps({"followup": "r"})}, "gone", [], NOW + 1)
    pipe.execute()
    redis_client.set(keys.delivery_done(k2), "{}")
    assert [x["key"] for x in dlq.entries(redis_client)] == [k1, k2]
    assert dlq.get(redis_client, k1)["reason"] == "HTTP 400"
    assert dlq.replay(redis_client, NOW + 10) == {"replayed": 1, "skipped_done": 1}
    assert dlq.size(redis_client) == 0
    assert redis_client.zscore(deliveries.DUE, k1) == NOW + 10
    assert redis_client.hget(keys.delivery_record(k1), "seq") == b""
    assert redis_client.zscore(deliveries.DUE, k2) is None
    assert dlq.replay_one(redis_client, k1, NOW) == "not_found"


def test_pause_parks_resume_makes_due_and_closes_the_circuit(redis_client):
    destinations.pause(redis_client, "hook")
    assert destinations.is_paused(redis_client, "hook")
    deliveries.schedule(redis_client, "hook|x", NOW)
    pipe = redis_client.pipeline()
    destinations.park(pipe, "hook|x", "")
    pipe.execute()
    assert redis_client.zscore(deliveries.DUE, "hook|x") is None
    breaker = CircuitBreaker(redis_client, CONFIG.delivery)
    for _ in range(CONFIG.delivery.circuit_threshold):
        breaker.failure("hook", NOW, "HTTP 503")
    [row] = destinations.report(redis_client, CONFIG, NOW)
    assert row["paused"] and row["parked"] == 1 and row["state"] == "open" and row["last_error"] == "HTTP 503"
    assert destinations.resume(redis_client, CONFIG, "hook", NOW + 1) == 1
    assert redis_client.zscore(deliveries.DUE, "hook|x") == NOW + 1
    [row] = destinations.report(redis_client, CONFIG, NOW)
    assert not row["paused"] and row["parked"] == 0 and row["state"] == "closed"


def test_circuit_state_names():
    assert state_name(None, None, NOW) == "closed"
    assert state_name(b"open", str(NOW + 1).encode(), NOW) == "open"
    assert state_name("open", NOW - 1, NOW) == "half_open"


def test_followups_list_and_cancel(redis_client):
    fid = followups.followup_id("nudge", "lob", "ltr_1")
    data = {"rule": "nudge", "do": "hook", "event": event().model_dump(mode="json"), "estimated": False,
            "scheduled_for": "2026-12-01T00:00:00+00:00"}
    redis_client.hset(keys.followup(fid), mapping={"data": json.dumps(data)})
    redis_client.zadd(followups.DUE, {fid: NOW})
    redis_client.sadd(keys.followup_piece("lob", "ltr_1"), fid)
    [row] = followups.pending(redis_client, mailpiece="ltr_1")
    assert row["id"] == fid and row["do"] == "hook" and row["trigger"] == "processed_for_delivery"
    assert followups.pending(redis_client, mailpiece="other") == []
    assert followups.cancel(redis_client, "no-such-id") is False
    assert followups.cancel(redis_client, fid) is True and followups.cancel(redis_client, fid) is False
    assert not redis_client.exists(keys.followup(fid), keys.followup_piece("lob", "ltr_1"))
