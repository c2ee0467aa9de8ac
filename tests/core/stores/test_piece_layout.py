"""The compact mailpiece layout: the read API's JSON is byte-for-byte the first layout's on a corpus, the hash
stays listpack-encoded and small, follow-up types and filter attributes come out the same."""

from __future__ import annotations

import json

import pytest
import redis
from starlette.responses import JSONResponse

from postrelay.core import keys
from postrelay.core.events import PIECE_ATTRS, CanonicalEvent, EventType, Location, Mailpiece, event_id
from postrelay.core.stores import piece_codec as codec
from postrelay.core.timeline import TimelineWriter, load_piece, seen_types
from postrelay.core.timeline_legacy import LegacyTimelineWriter
from postrelay.receiver.providers import postgrid
from tests.support.corpus import corpus
from tests.support.payloads import postgrid_status_update

PIECE_KEYS = (keys.piece, keys.piece_timeline, keys.piece_events, keys.piece_types)


def api_bytes(r: redis.Redis, pieces: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """What `GET /v1/mailpieces/{source}/{id}` answers for each piece (the same JSONResponse rendering)."""
    return {p: JSONResponse(load_piece(r, *p)).body for p in pieces}


def piece_memory(r: redis.Redis, source: str, piece_id: str) -> int:
    return sum(int(r.memory_usage(f(source, piece_id), samples=0) or 0) for f in PIECE_KEYS)


def test_new_layout_answers_the_same_json_as_the_first_on_the_corpus(redis_client):
    events = corpus()
    pieces = sorted({e.piece_key for e in events})
    assert {"US", "CA"} <= {e.field("country") for e in events}
    assert any(e.mailpiece.kind == "return_envelope" for e in events)
    assert any(e.estimated for e in events) and any(e.type.value.startswith("informed_") for e in events)

    old_applied = LegacyTimelineWriter(redis_client, 86400).apply_many(events)
    old = api_bytes(redis_client, pieces)
    redis_client.flushall()
    new_applied = TimelineWriter(redis_client, 86400).apply_many(events)
    new = api_bytes(redis_client, pieces)

    assert new == old
    assert sum(len(json.loads(b)["events"]) for b in new.values()) == len({e.id for e in events})
    # the stage after each event and the piece attributes filters read are the same too
    assert [e.stage for e in new_applied] == [e.stage for e in old_applied]
    paths = ["country", *PIECE_ATTRS]
    assert [[e.field(p) for p in paths] for e in new_applied] == [[e.field(p) for p in paths] for e in old_applied]
    # one key per piece, in Redis' compact encoding, with the type set the follow-ups read
    assert len(redis_client.keys("pr:piece:*")) == len(pieces)
    for p in pieces:
        assert redis_client.object("encoding", keys.piece(*p)) == b"listpack"
        assert 0 < redis_client.ttl(keys.piece(*p)) <= 86400
    types = seen_types(redis_client, pieces)
    for p in pieces:
        assert types[p] == {e.type.value for e in events if e.piece_key == p}


def test_an_event_the_compact_form_cannot_reproduce_is_stored_whole_and_read_back_exactly(redis_client):
    base = postgrid.normalize(postgrid_status_update("letter", "printing", order_id="letter_odd"),
                              codec.time_of("0").replace(year=2024)).events[0]
    odd = [
        base.model_copy(update={"metadata": {"postrelay": {"a": 1}, "after": "postrelay"}}),  # postrelay not last
        base.model_copy(update={"location": Location(zip=""), "id": "mev_" + "e" * 32}),  # empty zip, not None
        base.model_copy(update={"id": "mev_" + "f" * 32}),  # an id that is not the derived one
        base.model_copy(update={"metadata": {"n": 1.0, "big": 10**30, "s": "a,b|c" * 40, "postrelay": {}},
                                "source_event_id": "ev,with,commas", "id": event_id("postgrid", "ev,with,commas",
                                                                                    "printed")}),
    ]
    assert [codec.encode(e).whole for e in odd] == [True, True, True, False]
    LegacyTimelineWriter(redis_client, 0).apply_many(odd)
    old = api_bytes(redis_client, [base.piece_key])
    redis_client.flushall()
    TimelineWriter(redis_client, 0).apply_many(odd)
    new = api_bytes(redis_client, [base.piece_key])
    assert len(json.loads(new[base.piece_key])["events"]) == 4
    assert new == old
    assert redis_client.object("encoding", keys.piece(*base.piece_key)) == b"listpack"
    assert redis_client.ttl(keys.piece(*base.piece_key)) == -1  # retention 0 keeps it


def test_duplicates_change_nothing_and_the_stage_is_monotonic(redis_client):
    pg = [postgrid.normalize(postgrid_status_update("letter", s, order_id="letter_m", event_id=f"ev_{s}",
                                                    created_at=f"2024-05-0{i + 1}T10:00:00.000Z"),
                             codec.time_of("0").replace(year=2024)).events[0]
          for i, s in enumerate(("ready", "printing", "processed_for_delivery"))]
    writer = TimelineWriter(redis_client, 3600)
    writer.apply_many([pg[2], pg[0]])
    before = redis_client.hgetall(keys.piece(*pg[0].piece_key))
    again = writer.apply_many([pg[0], pg[2]])
    assert redis_client.hgetall(keys.piece(*pg[0].piece_key)) == before
    assert [e.stage.value for e in again] == ["mailed"] * 2
    late = writer.apply_many([pg[1]])[0]
    assert late.stage.value == "mailed"  # a late event does not move the piece back
    view = load_piece(redis_client, *pg[0].piece_key)
    assert [e["type"] for e in view["events"]] == ["created", "printed", "mailed"]
    assert [e["stage"] for e in view["events"]] == ["mailed", "mailed", "mailed"]
    assert view["stage"] == "mailed" and view["stage_at"] == "2024-05-03T10:00:00+00:00"


@pytest.mark.parametrize("n_events", [1, 6])
def test_memory_per_piece_against_the_first_layout(redis_client, n_events):
    """A PostGrid piece with recipient and metadata: ≤ 600 B with one event, ≤ 1/5 of the first layout with six."""
    statuses = ["ready", "printing", "processed_for_delivery", "completed"]

    def piece_events(i: int) -> list[CanonicalEvent]:
        oid = f"letter_{i:06d}aBcDeFgHiJkLmN"
        out = [postgrid.normalize(postgrid_status_update("letter", s, order_id=oid, event_id=f"event_{oid[-12:]}{s}",
                                                         metadata={"crm_contact_id": f"0031x0000{i:06d}",
                                                                   "campaign_id": "spring-24", "segment": "b2c"}),
                                  codec.time_of("0").replace(year=2024)).events[0] for s in statuses]
        out += [e.model_copy(update={"id": e.id[:-2] + f"{k:02d}", "type": EventType.IN_TRANSIT, "stage": None,
                                     "mailpiece": Mailpiece(**{**e.mailpiece.model_dump(), "id": oid})})
                for k, e in enumerate(out[:2])]
        return out[:n_events]

    sizes = {}
    # the console's index state goes to its own key here (another client: `pr:ix:state:{…}`), so this measures the
    # timeline store; "indexed" keeps it in the piece hash, as the worker does on a single Redis
    kw = redis_client.connection_pool.connection_kwargs
    other = redis.Redis(host=kw["host"], port=kw["port"])
    writers = (("old", LegacyTimelineWriter(redis_client, 86400)), ("new", TimelineWriter(redis_client, 86400, other)),
               ("indexed", TimelineWriter(redis_client, 86400)))
    for name, writer in writers:
        redis_client.flushall()
        total = 0
        for i in range(50):
            evs = piece_events(i)
            writer.apply_many(evs)
            total += piece_memory(redis_client, *evs[0].piece_key)
        sizes[name] = total / 50
    other.close()
    if n_events == 1:
        assert sizes["new"] <= 600, sizes
    else:
        assert sizes["indexed"] <= sizes["old"] / 5, sizes
    assert sizes["indexed"] - sizes["new"] < 260, sizes  # the console's state: campaign, email, name, ix_* fields


def test_the_writers_exactness_check_sees_what_equal_dicts_hide():
    base = postgrid.normalize(postgrid_status_update("letter", "printing", order_id="letter_eq"),
                              codec.time_of("0").replace(year=2024)).events[0]
    doc = base.model_dump(mode="json")
    assert doc == json.loads(base.model_dump_json()) and codec.encode_dict(doc).whole is False
    odd = [
        {**doc, "estimated": int(doc["estimated"])},  # 0 == False, but renders "0"
        {**doc, "recipient": dict(reversed(list(doc["recipient"].items())))},  # the same fields in another order
        {**doc, "mailpiece": {**doc["mailpiece"], "extra": None}},  # a field the compact form does not know
        {**doc, "metadata": {"postrelay": {"a": 1}, "b": 1}},  # postrelay not last
        {k: doc[k] for k in reversed(list(doc))},  # the event's own keys in another order
    ]
    for variant in odd:
        enc = codec.encode_dict(variant)
        assert enc.whole and json.loads(enc.part) == dict(variant, stage=None)
