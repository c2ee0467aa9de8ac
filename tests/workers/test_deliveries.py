"""Delivery guarantees against a real HTTP destination: retries, dead letters, replay, circuit, order."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from postrelay.core import keys
from postrelay.core.stores import deliveries, destinations, dlq
from tests.support.http_server import LocalHTTPServer, Reply
from tests.workers.conftest import dispatch, drain, event, promote, push, scheduled

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0wMTIzNDU2Nzg5"


def relay(url: str, **dest: object) -> dict:
    return {"destinations": {"hook": {"type": "webhook", "url": url, "secret": SECRET, **dest}},
            "routes": [{"events": ["*"], "to": ["hook"]}],
            "delivery": {"base_delay": 1, "max_delay": 60, "circuit_threshold": 100}}


class Script:
    """Answers from a list of replies, then 200s; records what arrived."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def __call__(self, req) -> Reply:
        return self.replies.pop(0) if self.replies else Reply(200, {"ok": True})


def test_delivered_once_with_a_verifiable_signature(make_runtime):
    with LocalHTTPServer() as hook:
        rt = make_runtime(relay(hook.url + "/catch"))
        e = event("processed_for_delivery")
        push(rt, e)
        dispatch(rt)
        drain(rt)
        assert len(hook.requests) == 1
        req = hook.requests[0]
        assert req.method == "POST" and req.path == "/catch"
        body = Webhook(SECRET).verify(req.body, req.headers)  # raises if the signature is wrong
        assert body["id"] == e.id and req.headers["webhook-id"] == e.id
        assert body["stage"] == "processed_for_delivery"
        assert rt.redis.exists(keys.delivery_done(deliveries.delivery_key("hook", e.id)))


def test_429_honours_retry_after_then_delivers_once(make_runtime, clock):
    with LocalHTTPServer(Script(Reply(429, {"error": "slow down"}, {"Retry-After": "120"}))) as hook:
        rt = make_runtime(relay(hook.url))
        push(rt, event())
        dispatch(rt)
        drain(rt)
        [(_, when)] = scheduled(rt)
        assert when >= clock.now + 120
        clock.advance(121)
        promote(rt)
        drain(rt)
        assert len(hook.requests) == 2
        assert hook.requests[0].headers["webhook-id"] == hook.requests[1].headers["webhook-id"]
        assert dlq.size(rt.redis) == 0


def test_500_then_success(make_runtime, clock):
    with LocalHTTPServer(Script(Reply(500), Reply(503))) as hook:
        rt = make_runtime(relay(hook.url))
        push(rt, event())
        dispatch(rt)
        for _ in range(3):
            drain(rt)
            clock.advance(3600)
            promote(rt)
        assert [r.headers["webhook-id"] for r in hook.requests].count(hook.requests[0].headers["webhook-id"]) == 3
        assert dlq.size(rt.redis) == 0
        assert scheduled(rt) == []


def test_network_error_and_timeout_are_retried(make_runtime, clock):
    with LocalHTTPServer(Script(Reply(200, delay=1.5))) as slow:
        rt = make_runtime({**relay(slow.url), "delivery": {"timeout": 0.3, "base_delay": 1}})
        push(rt, event())
        dispatch(rt)
        drain(rt)
        assert len(scheduled(rt)) == 1  # the timeout became a retry, not a loss
    rt2 = make_runtime(relay("http://127.0.0.1:9/closed"))
    push(rt2, event(piece="ltr_2"))
    dispatch(rt2)
    drain(rt2)
    assert len(scheduled(rt2)) == 2


def test_permanent_answer_is_dead_lettered_with_attempts_and_replayed_once(make_runtime):
    state = {"reject": True}

    def handler(req):
        if state["reject"]:
            return Reply(410, {"error": "bad field", "echo": req.headers.get("x-api-key")})  # webhook: 410 = permanent
        return Reply(200)

    with LocalHTTPServer(handler) as hook:
        rt = make_runtime(relay(hook.url, headers={"X-Api-Key": "zap-key-super-secret"}))
        e = event()
        push(rt, e)
        dispatch(rt)
        drain(rt)
        [entry] = dlq.entries(rt.redis)
        assert entry["destination"] == "hook" and entry["event_id"] == e.id
        assert entry["attempts"][0]["status"] == 410 and "bad field" in entry["attempts"][0]["detail"]
        assert "zap-key-super-secret" not in json.dumps(entry)
        assert entry["event"]["id"] == e.id
        state["reject"] = False
        assert dlq.replay(rt.redis, rt.clock()) == {"replayed": 1, "skipped_done": 0}
        drain(rt)
        assert dlq.size(rt.redis) == 0
        assert dlq.replay(rt.redis, rt.clock()) == {"replayed": 0, "skipped_done": 0}
        drain(rt)
        assert len(hook.requests) == 2  # one rejected, one delivered; never a third


def test_replay_of_an_already_delivered_dead_entry_is_skipped(make_runtime):
    with LocalHTTPServer() as hook:
        rt = make_runtime(relay(hook.url))
        e = event()
        push(rt, e)
        dispatch(rt)
        drain(rt)
        key = deliveries.delivery_key("hook", e.id)
        dlq.add(rt.redis, key, {"event": e.model_dump_json()}, "stale entry", [], rt.clock())
        assert dlq.replay(rt.redis, rt.clock(), destination="hook") == {"replayed": 0, "skipped_done": 1}
        drain(rt)
        assert len(hook.requests) == 1


def test_retries_stop_at_max_attempts(make_runtime, clock):
    with LocalHTTPServer(lambda req: Reply(502)) as hook:
        rt = make_runtime({**relay(hook.url), "delivery": {"max_attempts": 3, "base_delay": 1,
                                                             "circuit_threshold": 100}})
        push(rt, event())
        dispatch(rt)
        for _ in range(5):
            drain(rt)
            clock.advance(3600)
            promote(rt)
        assert len(hook.requests) == 3
        [entry] = dlq.entries(rt.redis)
        assert "gave up after 3 attempts" in entry["reason"]
        assert [a["status"] for a in entry["attempts"]] == [502, 502, 502]


def test_retries_stop_at_max_age(make_runtime, clock):
    with LocalHTTPServer(lambda req: Reply(500)) as hook:
        rt = make_runtime({**relay(hook.url), "delivery": {"max_age": "1h", "base_delay": 600,
                                                             "circuit_threshold": 100}})
        push(rt, event())
        dispatch(rt)
        for _ in range(10):
            drain(rt)
            clock.advance(1800)
            promote(rt)
        assert dlq.size(rt.redis) == 1
        assert len(hook.requests) < 10


def test_updates_for_one_piece_reach_the_destination_in_order(make_runtime, clock):
    first = event("in_transit", occurred="2026-11-18T10:00:00+00:00")
    second = event("processed_for_delivery", occurred="2026-11-20T10:00:00+00:00")
    other_piece = event("mailed", piece="ltr_9")
    failed: list[str] = []

    def first_fails_once(req) -> Reply:  # attempts run concurrently: pick the failure by event, not by order
        if req.headers["webhook-id"] == first.id and not failed:
            failed.append(first.id)
            return Reply(500)
        return Reply(200, {"ok": True})

    with LocalHTTPServer(first_fails_once) as hook:
        rt = make_runtime(relay(hook.url))
        push(rt, first, second, other_piece)
        dispatch(rt)
        drain(rt)
        # the first failed and waits for its retry; the second waits behind it; the other piece is not blocked
        ids = [r.headers["webhook-id"] for r in hook.requests]
        assert ids == [first.id, other_piece.id] or ids == [other_piece.id, first.id]
        clock.advance(60)
        promote(rt)
        drain(rt)
        ids = [r.headers["webhook-id"] for r in hook.requests]
        assert ids[-2:] == [first.id, second.id]
        assert hook.requests[-1].json()["stage"] == "processed_for_delivery"


def test_circuit_opens_waits_and_closes(make_runtime, clock):
    failing = {"on": True}
    with LocalHTTPServer(lambda r: Reply(503) if failing["on"] else Reply(200)) as bad, LocalHTTPServer() as good:
        rt = make_runtime({
            "destinations": {"bad": {"type": "webhook", "url": bad.url}, "good": {"type": "webhook", "url": good.url}},
            "routes": [{"events": ["*"], "to": ["bad", "good"]}],
            # one attempt at a time per destination, so the circuit opens between two attempts
            "delivery": {"circuit_threshold": 2, "circuit_cooldown": 30, "base_delay": 1,
                         "per_destination_concurrency": 1},
        })
        push(rt, *(event("mailed", piece=f"p{i}") for i in range(4)))
        dispatch(rt)
        drain(rt)
        assert len(good.requests) == 4  # the other destination keeps flowing
        assert len(bad.requests) == 2  # two failures opened the circuit; the rest wait instead of calling
        assert rt.breaker.state("bad", clock.now)["state"] == "open"
        failing["on"] = False
        clock.advance(31)
        assert rt.breaker.state("bad", clock.now)["state"] == "half_open"
        for _ in range(4):
            promote(rt)
            drain(rt)
            clock.advance(31)
        assert rt.breaker.state("bad", clock.now)["state"] == "closed"
        delivered = {r.headers["webhook-id"] for r in bad.requests[2:]}
        assert len(delivered) == 4 and dlq.size(rt.redis) == 0


def test_paused_destination_parks_and_resume_delivers(make_runtime):
    with LocalHTTPServer() as hook:
        rt = make_runtime(relay(hook.url))
        destinations.pause(rt.redis, "hook")
        push(rt, event())
        dispatch(rt)
        drain(rt)
        assert hook.requests == []
        report = {r["name"]: r for r in destinations.report(rt.redis, rt.config, rt.clock())}
        assert report["hook"]["paused"] and report["hook"]["parked"] == 1
        assert destinations.resume(rt.redis, rt.config, "hook", rt.clock()) == 1
        drain(rt)
        assert len(hook.requests) == 1


def test_rate_limit_spaces_requests(make_runtime, clock):
    with LocalHTTPServer() as hook:
        cfg = relay(hook.url, rate_limit="4/s")
        cfg["delivery"]["per_destination_concurrency"] = 1  # one waiter at a time: the fake clock's sleeps add up
        rt = make_runtime(cfg)
        push(rt, *(event("mailed", piece=f"p{i}") for i in range(6)))
        dispatch(rt)
        drain(rt)
        assert len(hook.requests) == 6
        assert sum(clock.slept) == pytest.approx(5 * 0.25, abs=0.01)  # 6 requests at 4/s span 1.25 s


def test_adapter_exception_is_retried_not_lost(make_runtime, monkeypatch):
    with LocalHTTPServer() as hook:
        rt = make_runtime(relay(hook.url))
        monkeypatch.setattr(rt.adapters["hook"], "deliver", lambda e, c: 1 / 0)
        push(rt, event())
        dispatch(rt)
        drain(rt)
        assert len(scheduled(rt)) == 1 and dlq.size(rt.redis) == 0


def test_fractional_retry_after_is_never_undercut(make_runtime, clock):
    """Issue 18 point 9: `Retry-After: 1.5` waits 1.5 s, not 1 (RQ's scheduler dropped the fraction)."""
    with LocalHTTPServer(Script(Reply(429, {"error": "slow down"}, {"Retry-After": "1.5"}))) as hook:
        cfg = relay(hook.url)
        cfg["delivery"].update(base_delay=0.01, max_delay=0.01)  # the backoff alone would retry after 10 ms
        rt = make_runtime(cfg)
        push(rt, event())
        dispatch(rt)
        drain(rt)
        [(_, due)] = scheduled(rt)
        answered = clock.now
        assert due >= answered + 1.5
        clock.advance(1.499)
        drain(rt)
        assert len(hook.requests) == 1  # 1 ms early: not yet
        clock.advance(0.001)
        drain(rt)
        assert len(hook.requests) == 2 and dlq.size(rt.redis) == 0


def test_webhook_4xx_is_retried_on_the_schedule_not_dead_lettered(make_runtime, clock):
    """Standard Webhooks: a receiver's 400/401/404 (a deploy in progress, a rotated key) is retried with
    backoff like a 5xx; only 410 dead-letters."""
    with LocalHTTPServer(Script(Reply(400, {"error": "bad"}), Reply(401), Reply(404))) as hook:
        rt = make_runtime(relay(hook.url))
        push(rt, event())
        dispatch(rt)
        drain(rt)
        for _ in range(3):
            assert len(scheduled(rt)) == 1 and dlq.size(rt.redis) == 0
            [(_, when)] = scheduled(rt)
            assert when >= clock.now  # scheduled through the retry schedule (full jitter may make it now)
            clock.advance(3600)
            promote(rt)
            drain(rt)
        assert [r.headers["webhook-id"] for r in hook.requests] == [hook.requests[0].headers["webhook-id"]] * 4
        assert dlq.size(rt.redis) == 0 and scheduled(rt) == []

