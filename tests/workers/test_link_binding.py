"""Binding links to pieces in the dispatcher, in both orders: visits after the binding go to the piece; visits
before it stay on the link, reach routes once, and are attached to the piece at binding, in order. Follow-ups
("second postcard 14 days after delivery unless a visit") see visits as the piece's events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postrelay.core import keys
from postrelay.core.events import EventType
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.stores import followups as fu_store
from postrelay.core.stores import link_binding
from postrelay.core.stores import links as store
from postrelay.core.timeline import load_piece, seen_types
from postrelay.workers import followups
from postrelay.workers.dispatcher import Dispatcher
from postrelay.workers.followups import FollowupHandler
from tests.support.http_server import LocalHTTPServer
from tests.workers.conftest import dispatch, drain, event, push, relay_handler, worker_for

LINKS = LinksConfig(base_url="https://go.example.test", allowed_hosts=["shop.example.com"])
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _visit(rt, token: str, at: datetime, n: int = 1, etype: EventType = EventType.PURL_OPENED):
    link = store.read(rt.redis, token)
    assert link is not None
    return store.visit_event(link, etype, at, f"{token}.open.v{n}")


def _timeline(rt, source: str, piece: str) -> list[dict]:
    view = load_piece(rt.redis, source, piece)
    return view["events"] if view else []


def _hooked(make_runtime, url: str, **extra):
    return make_runtime({"destinations": {"crm": {"type": "webhook", "url": url + "/crm"}},
                         "routes": [{"events": ["purl_opened", "purl_completed"], "to": ["crm"]}], **extra})


def test_bound_first_then_visits_go_to_the_piece_with_its_recipient(make_runtime, clock):
    with LocalHTTPServer() as hook:
        rt = _hooked(make_runtime, hook.url)
        token = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/", ref="crm-7")["token"]
        push(rt, event("mailed", piece="ltr_9", metadata={"postrelay_link": token, "crm_id": "c-7"},
                       occurred="2026-11-19T10:00:00+00:00"))
        dispatch(rt)
        assert store.read(rt.redis, token).piece_id == "ltr_9"
        push(rt, _visit(rt, token, T0))
        dispatch(rt)
        drain(rt)
        types = [e["type"] for e in _timeline(rt, "lob", "ltr_9")]
        assert types == ["mailed", "purl_opened"]
        [delivered] = hook.requests
        body = delivered.json()
        assert body["type"] == "purl_opened" and body["source"] == "links"
        assert body["mailpiece"]["id"] == "ltr_9" and body["recipient"]["email"] == "ada@example.com"
        assert body["metadata"]["crm_id"] == "c-7" and body["metadata"]["postrelay"]["piece_source"] == "lob"
        assert _timeline(rt, "links", token) == []


def test_visits_before_binding_are_attached_in_order_and_routed_once(make_runtime, clock):
    with LocalHTTPServer() as hook:
        rt = _hooked(make_runtime, hook.url)
        token = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/", ref="crm-8")["token"]
        v2, v1 = _visit(rt, token, T0 + timedelta(hours=2), 2), _visit(rt, token, T0, 1)
        push(rt, v2, v1)  # arrive out of order
        dispatch(rt)
        drain(rt)
        assert len(hook.requests) == 2  # routes see the visits the moment they happen
        assert [e["id"] for e in _timeline(rt, "links", token)] == [v1.id, v2.id]
        push(rt, event("in_transit", piece="ltr_8", metadata={"ref": "crm-8"}, occurred="2026-11-18T10:00:00+00:00"))
        d = dispatch(rt)
        drain(rt)
        piece = _timeline(rt, "lob", "ltr_8")
        assert [e["type"] for e in piece] == ["in_transit", "purl_opened", "purl_opened"]
        assert [e["metadata"]["postrelay"]["attached"] for e in piece[1:]] == [v1.id, v2.id]
        assert [e["occurred_at"] for e in piece[1:]] == ["2026-11-20T10:00:00Z", "2026-11-20T12:00:00Z"]
        assert len(hook.requests) == 2  # the attached copies are not sent again
        assert rt.redis.hget("pr:stats", "events|purl_opened") == b"2"  # counted when they came, not again
        # processing the binding event again (a crash before the ack) attaches the same copies, no more
        push(rt, event("in_transit", piece="ltr_8", metadata={"ref": "crm-8"}, occurred="2026-11-18T10:00:00+00:00"))
        d.run_once(block_ms=10)
        assert len(_timeline(rt, "lob", "ltr_8")) == 3
        push(rt, _visit(rt, token, T0 + timedelta(days=1), 3))  # later visits go straight to the piece
        dispatch(rt)
        assert len(_timeline(rt, "lob", "ltr_8")) == 4


def test_ref_binding_respects_the_campaign_and_binds_once(make_runtime, clock):
    rt = make_runtime({})
    spring = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/", ref="r1",
                        campaign_id="spring")["token"]
    push(rt, event("mailed", piece="ltr_a", metadata={"ref": "r1", "campaign_id": "autumn"}))
    dispatch(rt)
    assert not store.read(rt.redis, spring).bound
    push(rt, event("mailed", piece="ltr_b", metadata={"ref": "r1", "campaign_id": "spring"}))
    push(rt, event("mailed", piece="ltr_c", metadata={"ref": "r1", "campaign_id": "spring"}))
    dispatch(rt)
    assert store.read(rt.redis, spring).piece_id == "ltr_b"  # the first piece wins; the second is ignored
    assert rt.redis.smembers(keys.link_ref("r1")) == set()


def test_minted_with_its_piece_binds_at_once(make_runtime, clock):
    rt = make_runtime({})
    token = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/",
                       mailpiece={"source": "lob", "id": "ltr_m"})["token"]
    push(rt, _visit(rt, token, T0))
    dispatch(rt)
    assert [e["type"] for e in _timeline(rt, "lob", "ltr_m")] == ["purl_opened"]


def test_mailings_bind_after_creating_the_piece(make_runtime, clock):
    rt = make_runtime({})
    token = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/")["token"]
    assert link_binding.bind(rt.redis, token, "postgrid", "postcard_1", clock())
    assert link_binding.bind(rt.redis, token, "postgrid", "postcard_1", clock())  # idempotent
    assert not link_binding.bind(rt.redis, token, "postgrid", "postcard_2", clock())
    assert not link_binding.bind(rt.redis, "AAAAAAAAAAAAAAAAAAAAAA", "postgrid", "postcard_1", clock())


def test_visit_cancels_the_second_postcard(make_runtime, clock):
    with LocalHTTPServer() as hook:
        rule = {"name": "second-postcard", "after": "delivered", "delay": "14 days", "unless": ["purl_opened"],
                "do": "printer"}
        rt = make_runtime({"destinations": {"printer": {"type": "webhook", "url": hook.url}}, "followups": [rule]})
        visited = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/")["token"]
        ignored = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/")["token"]
        handlers = [relay_handler(rt), FollowupHandler(rt)]
        for piece, token in (("ltr_v", visited), ("ltr_i", ignored)):
            push(rt, event("delivered", piece=piece, metadata={"postrelay_link": token},
                           occurred="2026-11-20T10:00:00+00:00"))
        dispatch(rt, handlers=handlers)
        assert {p["mailpiece"] for p in fu_store.pending(rt.redis)} == {"ltr_v", "ltr_i"}
        push(rt, _visit(rt, visited, T0 + timedelta(days=3)))
        dispatch(rt, handlers=handlers)
        assert [p["mailpiece"] for p in fu_store.pending(rt.redis)] == ["ltr_i"]
        clock.now = (T0 + timedelta(days=15)).timestamp()
        assert followups.Scheduler(rt).run_once() == 1
        drain(rt)
        assert [r.json()["mailpiece"]["id"] for r in hook.requests] == ["ltr_i"]


def test_held_visit_attached_later_also_cancels(make_runtime, clock):
    rule = {"name": "second-postcard", "after": "delivered", "delay": "14 days", "unless": ["purl_opened"],
            "do": "printer"}
    rt = make_runtime({"destinations": {"printer": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
                       "followups": [rule]})
    token = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/", ref="late")["token"]
    d = Dispatcher(rt, [FollowupHandler(rt)], worker_for(rt).executor, consumer="t", block_ms=10)
    push(rt, _visit(rt, token, T0))
    d.run_once(block_ms=10)
    push(rt, event("delivered", piece="ltr_late", metadata={"ref": "late"}, occurred="2026-11-19T10:00:00+00:00"))
    d.run_once(block_ms=10)
    assert fu_store.pending(rt.redis) == []  # the piece already had its visit when the delivery arrived
    types = seen_types(rt.redis, [("lob", "ltr_late")])[("lob", "ltr_late")]
    assert types == {"delivered", "purl_opened"}


def test_goal_reaches_the_crm_contact_of_the_piece(make_runtime, clock):
    """A goal visit (purl_completed) of a bound link goes to HubSpot as the piece's contact (its metadata)."""
    from tests.support.http_server import Reply

    with LocalHTTPServer(lambda r: Reply(200, {"id": "note-1" if r.path.endswith("/notes") else "501"})) as crm:
        rt = make_runtime({"destinations": {"crm": {"type": "hubspot", "token": "pat-test-0123456789",
                                                    "base_url": crm.url}},
                           "routes": [{"events": ["purl_completed"], "to": ["crm"]}]})
        token = store.mint(rt.redis, LINKS, clock(), target_url="https://shop.example.com/")["token"]
        push(rt, event("delivered", piece="ltr_g", metadata={"postrelay_link": token, "hubspot_contact_id": "501"}))
        dispatch(rt)
        push(rt, _visit(rt, token, T0, etype=EventType.PURL_COMPLETED))
        dispatch(rt)
        drain(rt)
        paths = [(r.method, r.path.split("?")[0]) for r in crm.requests]
        assert paths == [("PATCH", "/crm/v3/objects/contacts/501"), ("POST", "/crm/v3/objects/notes")]
        note = crm.requests[1].json()["properties"]["hs_note_body"]
        assert "pURL completed" in note and "ltr_g" in note
