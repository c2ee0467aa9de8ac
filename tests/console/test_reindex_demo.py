"""`reindex` builds, for data stored before the indexes, exactly what live indexing builds; the demo data set."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import redis

from postrelay.core import demo, keys
from postrelay.core.config import load_runtime_config
from postrelay.core.stores.indexes import STATE_FIELDS
from postrelay.core.stores.reindex import reindex
from postrelay.core.timeline import TimelineWriter, seen_types
from tests.console.conftest import piece_event
from tests.support.processes import ROOT

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def index_snapshot(r: redis.Redis, with_days: bool = True) -> dict:
    out = {}
    for raw in sorted(r.scan_iter(match=keys.INDEX_PREFIX + ":*")):
        k = raw.decode()
        if k.startswith(keys.INDEX_PREFIX + ":tmp:") or (not with_days and ":days:" in k):
            continue
        t = r.type(raw).decode()
        out[k] = r.hgetall(raw) if t == "hash" else r.zrange(raw, 0, -1, withscores=True)
    return out


def pieces_like_before_the_indexes(r: redis.Redis) -> None:
    """What a store written by an older postrelay holds: timelines, no index keys, no index state."""
    for raw in list(r.scan_iter(match=keys.INDEX_PREFIX + ":*")):
        r.delete(raw)
    for raw in list(r.scan_iter(match="pr:piece:{*}", _type="hash")):
        if raw.decode().endswith("}"):
            r.hdel(raw, *STATE_FIELDS)


def corpus() -> list:
    rng = random.Random(7)
    events = []
    for n in range(40):
        steps = [("created", 0), ("mailed", 1), ("in_transit", 2), ("processed_for_delivery", 4), ("delivered", 5),
                 ("purl_opened", 6), ("returned_to_sender", 9)]
        for etype, days in steps[:rng.randint(1, len(steps))]:
            events.append(piece_event(f"p{n}", etype, days + rng.random(), campaign=rng.choice(["a", "b", "c"]),
                                      country=rng.choice(["US", "CA"])))
    return sorted(events, key=lambda e: e.occurred_at)


def test_reindex_rebuilds_what_live_indexing_built_and_is_idempotent(redis_client: redis.Redis) -> None:
    TimelineWriter(redis_client, 86400).apply_many(corpus())
    live = index_snapshot(redis_client)
    assert live[keys.campaign_funnel("a")]
    pieces_like_before_the_indexes(redis_client)
    assert index_snapshot(redis_client) == {}
    seen: list[tuple[int, int]] = []
    counts = reindex(redis_client, redis_client, 86400, progress=lambda done, total: seen.append((done, total)),
                     batch=7)
    assert counts == {"pieces": 40, "events": len(corpus()), "skipped": 0}
    assert seen[-1] == (40, 40) and len(seen) == 6  # a progress step per batch
    assert index_snapshot(redis_client) == live
    ttl = redis_client.ttl(keys.piece("lob", "p0"))
    reindex(redis_client, redis_client, 86400)  # again, e.g. while receiving: nothing counts twice
    assert index_snapshot(redis_client) == live
    assert redis_client.ttl(keys.piece("lob", "p0")) <= ttl  # the piece keeps its own expiry


def test_reindex_with_the_index_on_another_redis(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    pieces, queue = redis.Redis.from_url(f"{base}/0"), redis.Redis.from_url(f"{base}/1")
    queue.flushdb()
    TimelineWriter(pieces, 86400, index=queue).apply_many(corpus())
    live = index_snapshot(queue, with_days=False)
    queue.flushdb()
    reindex(pieces, queue, 86400)
    assert index_snapshot(queue, with_days=False) == live
    assert not any(k.startswith(b"pr:ix") for k in pieces.scan_iter())  # nothing of the index on the piece store
    queue.flushdb()


def test_rebuild_drops_stale_counts(redis_client: redis.Redis) -> None:
    TimelineWriter(redis_client, 86400).apply_many(corpus())
    live = index_snapshot(redis_client)
    redis_client.hincrby(keys.campaign_funnel("a"), "mailed", 1000)  # an index gone wrong (e.g. restored data)
    reindex(redis_client, redis_client, 86400, rebuild=True)
    assert index_snapshot(redis_client, with_days=False) == {k: v for k, v in live.items() if ":days:" not in k}


def test_demo_data_set(redis_client: redis.Redis) -> None:
    config = load_runtime_config(str(ROOT / "examples" / "demo.toml"))
    counts = demo.load(redis_client, redis_client, config, demo.Plan(pieces=400, campaigns=4), now=NOW)
    assert counts["pieces"] == 400 and counts["events"] > 1500 and counts["dead_letters"] > 0
    names = [m.decode() for m in redis_client.zrange(keys.INDEX_CAMPAIGNS, 0, -1)]
    assert sorted(names) == sorted(demo.campaign_names(4))
    canada = redis_client.hgetall(keys.campaign_funnel("canada-launch"))
    assert int(canada[b"mailed"]) > 0 and int(canada[b"delivered"]) > 0
    ca_piece = redis_client.zrange(keys.index_set("camp", "canada-launch"), 0, 0)[0].decode().split(":", 1)
    ca_types = seen_types(redis_client, [tuple(ca_piece)])[tuple(ca_piece)]
    assert "mailed" in ca_types and not ca_types & {"in_transit", "in_local_area", "processed_for_delivery"}
    spring = {k.decode(): int(v) for k, v in redis_client.hgetall(keys.campaign_funnel("spring-postcards")).items()}
    assert spring["mailed"] >= spring["in_transit"] >= spring["delivered"] > spring.get("purl_opened", 0) > 0
    assert redis_client.hlen(keys.DLQ) == counts["dead_letters"]
    assert redis_client.hget(keys.circuit("erp"), "state") == b"open"
    again = demo.load(redis_client, redis_client, config, demo.Plan(pieces=400, campaigns=4), now=NOW)
    assert again == counts  # deterministic; the pieces and their funnels are not counted twice
    assert {k.decode(): int(v) for k, v in redis_client.hgetall(keys.campaign_funnel("spring-postcards")).items()
            } == spring
