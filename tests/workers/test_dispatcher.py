"""The ingest-stream consumer: timelines, routing, acknowledgement, crash recovery."""

from __future__ import annotations

import json

from postrelay.core import keys
from postrelay.core.stores import deliveries
from postrelay.core.timeline import TimelineWriter, load_piece
from postrelay.workers.dispatcher import POISON, Dispatcher
from tests.support.http_server import LocalHTTPServer
from tests.workers.conftest import dispatch, drain, event, push, relay_handler, worker_for


def _stored(rt, piece="ltr_1"):
    return {e["id"]: e for e in load_piece(rt.redis, "lob", piece)["events"]}


def _count(rt, piece="ltr_1"):
    view = load_piece(rt.redis, "lob", piece)
    return len(view["events"]) if view else 0


def test_events_update_timeline_and_are_acknowledged(make_runtime):
    rt = make_runtime({})
    pfd = event("processed_for_delivery", occurred="2026-11-20T10:00:00+00:00")
    late = event("in_local_area", occurred="2026-11-19T08:00:00+00:00")
    push(rt, pfd, late)
    dispatch(rt)
    assert load_piece(rt.redis, "lob", "ltr_1")["stage"] == "processed_for_delivery"
    stored = _stored(rt)
    assert stored[pfd.id]["stage"] == "processed_for_delivery"
    assert stored[late.id]["stage"] == "processed_for_delivery"  # the late scan does not move the piece back
    order = list(stored)
    assert order == [late.id, pfd.id]  # ordered by occurrence
    assert rt.redis.xlen(keys.INGEST_STREAM) == 0
    assert rt.redis.xpending(keys.INGEST_STREAM, keys.INGEST_GROUP)["pending"] == 0


def test_terminal_stage_sticks_and_reapplying_changes_nothing(make_runtime):
    rt = make_runtime({})
    rts = event("returned_to_sender", occurred="2026-11-20T10:00:00+00:00")
    delivered = event("delivered", occurred="2026-11-21T10:00:00+00:00")
    writer = TimelineWriter(rt.redis, 3600)
    out = writer.apply_many([rts, delivered])
    assert [e.stage for e in out] == ["returned_to_sender", "returned_to_sender"]
    before = rt.redis.hgetall(keys.piece("lob", "ltr_1"))
    again = writer.apply_many([delivered, rts])
    assert [e.stage for e in again] == ["returned_to_sender", "returned_to_sender"]
    assert rt.redis.hgetall(keys.piece("lob", "ltr_1")) == before
    assert _count(rt) == 2


def test_unranked_first_event_has_no_stage(make_runtime):
    rt = make_runtime({})
    out = TimelineWriter(rt.redis, 3600).apply_many([event("purl_opened")])
    assert out[0].stage is None


def test_routes_filter_by_type_country_and_metadata(make_runtime):
    with LocalHTTPServer() as us_hook, LocalHTTPServer() as all_hook:
        rt = make_runtime({
            "destinations": {"us": {"type": "webhook", "url": us_hook.url + "/us"},
                             "all": {"type": "webhook", "url": all_hook.url + "/all"}},
            "routes": [
                {"events": ["processed_for_delivery", "returned_to_sender"],
                 "where": {"country": "US", "metadata.campaign": "spring"}, "to": ["us"]},
                {"events": ["*"], "to": ["all"]},
            ],
        })
        match = event("processed_for_delivery", piece="a", metadata={"campaign": "Spring"})
        wrong_country = event("processed_for_delivery", piece="b", country="CA", metadata={"campaign": "spring"})
        wrong_campaign = event("returned_to_sender", piece="c", metadata={"campaign": "fall"})
        wrong_type = event("mailed", piece="d", metadata={"campaign": "spring"})
        push(rt, match, wrong_country, wrong_campaign, wrong_type)
        dispatch(rt)
        drain(rt)
        assert [r.json()["id"] for r in us_hook.requests] == [match.id]
        assert sorted(r.json()["id"] for r in all_hook.requests) == sorted(
            e.id for e in (match, wrong_country, wrong_campaign, wrong_type))


def test_entries_of_a_dead_consumer_are_reclaimed_once(make_runtime):
    with LocalHTTPServer() as hook:
        rt = make_runtime({"destinations": {"h": {"type": "webhook", "url": hook.url}},
                           "routes": [{"events": ["*"], "to": ["h"]}]})
        e = event("mailed")
        push(rt, e)
        w = worker_for(rt)  # creates the group
        rt.redis.xreadgroup(keys.INGEST_GROUP, "doomed", {keys.INGEST_STREAM: ">"}, count=10)  # read, then "died"
        survivor = Dispatcher(rt, [relay_handler(rt)], w.executor, consumer="survivor", claim_idle=0)
        assert survivor.run_once(block_ms=10) == 0  # nothing new
        assert survivor.reclaim() == 1
        assert survivor.reclaim() == 0
        drain(rt)
        assert len(hook.requests) == 1
        assert rt.redis.xpending(keys.INGEST_STREAM, keys.INGEST_GROUP)["pending"] == 0
        assert _count(rt) == 1


def test_reprocessing_an_entry_does_not_deliver_twice(make_runtime):
    with LocalHTTPServer() as hook:
        rt = make_runtime({"destinations": {"h": {"type": "webhook", "url": hook.url}},
                           "routes": [{"events": ["*"], "to": ["h"]}]})
        e = event("mailed")
        push(rt, e)
        dispatch(rt)
        drain(rt)
        push(rt, e)  # e.g. a crash after the effects were stored but before XACK: the entry comes back
        dispatch(rt)
        drain(rt)
        assert len(hook.requests) == 1


def test_unparseable_entry_is_kept_aside_not_lost(make_runtime):
    rt = make_runtime({})
    rt.redis.xadd(keys.INGEST_STREAM, {"e": b"{not json"})
    push(rt, event("mailed"))
    dispatch(rt)
    assert rt.redis.llen(POISON) == 1
    assert json.loads(rt.redis.lindex(POISON, 0))["raw"] == "{not json"
    assert _count(rt) == 1
    assert rt.redis.xlen(keys.INGEST_STREAM) == 0


def test_a_worker_delivers_what_it_dispatched_itself_in_its_executor(make_runtime):
    with LocalHTTPServer() as hook:
        rt = make_runtime({"destinations": {"hook": {"type": "webhook", "url": hook.url + "/h"}},
                           "routes": [{"events": ["*"], "to": ["hook"]}]})
        events = [event(piece=f"ltr_{i}") for i in range(30)]
        push(rt, *events)
        dispatch(rt)
        assert sorted(r.json()["id"] for r in hook.requests) == sorted(e.id for e in events)
        assert not rt.redis.keys("rq:*")  # no RQ job on the way
        assert rt.redis.zcard(deliveries.DUE) == 0
        assert rt.redis.xlen(keys.INGEST_STREAM) == 0


def test_a_backlog_waits_in_the_stream_while_the_executor_has_no_room(make_runtime):
    import threading

    from postrelay.workers.executor import DeliveryExecutor

    release = threading.Event()

    def slow(req):
        release.wait(10)
        from tests.support.http_server import Reply
        return Reply()

    with LocalHTTPServer(slow) as hook:
        rt = make_runtime({"destinations": {"hook": {"type": "webhook", "url": hook.url + "/h"}},
                           "routes": [{"events": ["*"], "to": ["hook"]}]})
        w = worker_for(rt)
        w.executor.shutdown(1)
        ex = w.executor = DeliveryExecutor(w.run_attempt, max_in_flight=4, per_destination=2, max_waiting=3, hold=30.0)
        try:
            push(rt, *[event(piece=f"ltr_{i}") for i in range(20)])
            d = Dispatcher(rt, [relay_handler(rt)], ex, consumer="test", block_ms=10)
            taken = sum(d.run_once(block_ms=10) for _ in range(5))
            assert taken == 5  # 2 attempts running + 3 waiting in the line: nothing more was read
            assert rt.redis.xlen(keys.INGEST_STREAM) == 15  # the rest waits in the stream, for any worker
            assert rt.redis.xpending(keys.INGEST_STREAM, keys.INGEST_GROUP)["pending"] == 0
            release.set()
            while d.run_once(block_ms=10) or ex.in_flight:
                ex.wait_for_room(0.05)
            assert ex.wait_idle(10)
        finally:
            release.set()
        assert len({r.json()["id"] for r in hook.requests}) == 20


def test_deliveries_committed_but_never_handed_over_are_recovered(make_runtime, clock):
    """A worker killed between its commit and starting the attempts: any worker's due loop runs them later."""
    with LocalHTTPServer() as hook:
        rt = make_runtime({"destinations": {"hook": {"type": "webhook", "url": hook.url + "/h"}},
                           "routes": [{"events": ["*"], "to": ["hook"]}]})
        handler = relay_handler(rt)
        handler.committed = lambda: None  # the process "dies" right after the commit
        events = [event(piece=f"ltr_{i}") for i in range(3)]
        push(rt, *events)
        dispatch(rt, handlers=[handler])
        assert hook.requests == [] and rt.redis.zcard(deliveries.DUE) == 3
        drain(rt)
        assert hook.requests == []  # not before the lease ran out
        clock.advance(rt.config.delivery.lease + 1)
        drain(rt)
        assert sorted(r.json()["id"] for r in hook.requests) == sorted(e.id for e in events)


def test_the_worker_knows_while_its_dispatcher_reads_a_backlog_for_a_destination(make_runtime):
    rt = make_runtime({"destinations": {"crm": {"type": "hubspot", "token": "pat-na1-0000", "batch_size": 100,
                                                "base_url": "http://127.0.0.1:9"},
                                        "hook": {"type": "webhook", "url": "http://127.0.0.1:9/h"}},
                       "routes": [{"events": ["mailed"], "to": ["crm"]}]})
    w = worker_for(rt)
    w.dispatcher.batch = 3
    push(rt, *[event("mailed", piece=f"ltr_{i}") for i in range(5)])
    assert w.dispatcher.run_once(block_ms=10) == 3
    assert w.feeding("crm") and not w.feeding("hook")  # a full read: more entries wait in the stream
    assert w.dispatcher.run_once(block_ms=10) == 2
    assert not w.feeding("crm")  # the stream is read to its end
    assert sorted(w.batcher.held()) == sorted(deliveries.delivery_key("crm", event("mailed", piece=f"ltr_{i}").id)
                                              for i in range(5))
