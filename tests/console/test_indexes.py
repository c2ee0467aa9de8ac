"""The console's indexes as Redis holds them: exact under duplicate, late and out-of-order events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postrelay.core import keys
from postrelay.core.events import RANK, TERMINAL, CanonicalEvent, EventType, Mailpiece, Recipient
from postrelay.core.stores.indexes import IndexWriter
from postrelay.core.timeline import TimelineWriter, load_piece

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
LIFE = [t for t in sorted(RANK, key=RANK.__getitem__) if t not in TERMINAL]
# (type, days after T0): one piece's possible events
ALL_EVENTS = [("created", 0), ("printed", 1), ("mailed", 2), ("in_transit", 3), ("in_local_area", 4),
              ("processed_for_delivery", 5.5), ("delivered", 6), ("returned_to_sender", 9), ("purl_opened", 7),
              ("purl_completed", 8), ("re_routed", 4.5), ("cancelled", 0.5)]


def ev(piece: str, etype: str, days: float, campaign: str | None = "spring", name: str = "Ada Lovelace",
       email: str = "Ada@Example.com", sid: str | None = None) -> CanonicalEvent:
    return CanonicalEvent.build(
        source="lob", source_event_id=sid or f"{piece}:{etype}:{days}", type=etype,
        occurred_at=T0 + timedelta(days=days),
        mailpiece=Mailpiece(id=piece, kind="postcard", country="US", campaign_id=campaign),
        recipient=Recipient(name=name, email=email))


def funnel(r: redis.Redis, campaign: str = "spring") -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.campaign_funnel(campaign)).items()}


def expected_funnel(pieces: dict[str, set[str]]) -> dict[str, int]:
    """Brute force: a piece reached a lifecycle stage when it had that stage or a later non-terminal one
    (returned implies mailed); terminal and unranked types count when the piece had one."""
    out: dict[str, int] = {"pieces": len(pieces)}
    for types in pieces.values():
        reached = max([RANK[EventType(t)] for t in types if EventType(t) in RANK and EventType(t) not in TERMINAL]
                      + ([40] if "returned_to_sender" in types else []) + [0])
        for s in LIFE:
            if RANK[s] <= reached:
                out[s.value] = out.get(s.value, 0) + 1
        for t in types:
            if EventType(t) in TERMINAL or EventType(t) not in RANK:
                out[t] = out.get(t, 0) + 1
    return out


def test_a_returned_piece_counts_as_mailed_and_as_returned(redis_client: redis.Redis) -> None:
    w = TimelineWriter(redis_client, 86400)
    w.apply_many([ev("p1", "mailed", 2), ev("p1", "returned_to_sender", 9)])
    assert funnel(redis_client) == {"pieces": 1, "created": 1, "addressed": 1, "printed": 1, "mailed": 1,
                                    "returned_to_sender": 1}
    assert redis_client.zrange(keys.index_set("stage", "returned_to_sender"), 0, -1) == [b"lob:p1"]


def test_duplicates_late_and_out_of_order_events_count_once(redis_client: redis.Redis) -> None:
    w = TimelineWriter(redis_client, 86400)
    w.apply_many([ev("p1", "delivered", 6)])                    # the last scan first
    w.apply_many([ev("p1", "delivered", 6), ev("p1", "mailed", 2)])  # a duplicate, then a late one
    w.apply_many([ev("p1", "delivered", 6.1, sid="other-provider-event")])  # same stage, another event
    f = funnel(redis_client)
    assert f["pieces"] == 1 and f["mailed"] == 1 and f["delivered"] == 1 and f["processed_for_delivery"] == 1
    assert set(f.values()) == {1}
    # the piece is in exactly one stage set, its timeline's stage
    assert load_piece(redis_client, "lob", "p1")["stage"] == "delivered"
    stage_sets = [k for k in redis_client.keys(keys.index_set("stage", "*")) if redis_client.zcard(k)]
    assert stage_sets == [keys.index_set("stage", "delivered").encode()]


def test_campaign_named_only_by_a_later_event_counts_what_the_piece_reached(redis_client: redis.Redis) -> None:
    w = TimelineWriter(redis_client, 86400)
    w.apply_many([ev("p1", "in_transit", 3, campaign=None), ev("p1", "purl_opened", 7, campaign=None)])
    assert funnel(redis_client) == {}
    w.apply_many([ev("p1", "processed_for_delivery", 5.5)])
    assert funnel(redis_client) == {"pieces": 1, "created": 1, "addressed": 1, "printed": 1, "mailed": 1,
                                    "in_transit": 1, "in_local_area": 1, "processed_for_delivery": 1,
                                    "purl_opened": 1}
    assert redis_client.zrange(keys.index_set("camp", "spring"), 0, -1) == [b"lob:p1"]


def test_search_sets_and_transit_histogram(redis_client: redis.Redis) -> None:
    w = TimelineWriter(redis_client, 86400)
    w.apply_many([ev("p1", "processed_for_delivery", 5.5), ev("p1", "mailed", 2), ev("p2", "mailed", 2, name="Bob",
                                                                                     email="bob@example.com")])
    assert redis_client.zrange(keys.index_set("email", "ada@example.com"), 0, -1) == [b"lob:p1"]
    assert redis_client.zrange(keys.index_set("name", "lovelace"), 0, -1) == [b"lob:p1"]
    assert redis_client.zrange(keys.index_set("src", "lob"), 0, -1) == [b"lob:p1", b"lob:p2"]
    # scored by the piece's first occurrence, moved back when an earlier event arrives late
    assert redis_client.zscore(keys.INDEX_ALL, "lob:p1") == (T0 + timedelta(days=2)).timestamp()
    assert redis_client.hgetall(keys.campaign_transit("spring")) == {b"3.5": b"1"}
    w.apply_many([ev("p1", "mailed", 1.5, sid="earlier-mailed-scan")])
    assert redis_client.hgetall(keys.campaign_transit("spring")) == {b"4.0": b"1"}


pieces_strategy = st.lists(
    st.lists(st.sampled_from(range(len(ALL_EVENTS))), min_size=1, max_size=8), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=pieces_strategy, order=st.randoms(use_true_random=False), split=st.booleans())
def test_funnel_equals_brute_force_for_any_order_and_duplicates(redis_url: str, plan: list[list[int]], order,
                                                                 split: bool) -> None:
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    events, truth = [], {}
    for n, picks in enumerate(plan):
        piece = f"p{n}"
        truth[piece] = {ALL_EVENTS[i][0] for i in picks}
        events += [ev(piece, *ALL_EVENTS[i]) for i in picks]  # a repeated pick is a duplicate delivery
    order.shuffle(events)
    if split:  # index state on "the queue Redis" applied by the second script, some batches twice (a re-run)
        writer = IndexWriter(r, 86400)
        for i in range(0, len(events), 3):
            writer.apply_many(events[i:i + 3])
            if i % 2 == 0:
                writer.apply_many(events[i:i + 3])
    else:
        w = TimelineWriter(r, 86400)
        for i in range(0, len(events), 3):
            w.apply_many(events[i:i + 3])
    assert funnel(r) == expected_funnel(truth)
    days = {k.decode(): int(v) for k, v in r.hgetall(keys.campaign_days("spring")).items()}
    per_stage: dict[str, int] = {}
    for k, v in days.items():
        per_stage[k.split("|")[0]] = per_stage.get(k.split("|")[0], 0) + v
    assert per_stage == {k: v for k, v in expected_funnel(truth).items() if k != "pieces"}
    assert r.zcard(keys.index_set("camp", "spring")) == len(plan)
    r.close()
