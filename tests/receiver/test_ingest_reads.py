"""IngestQueue.get: reads travel with queued events in one round trip, survive a flushed script cache, and fail
like enqueues when Redis is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, Mailpiece
from postrelay.receiver.ingest import IngestQueue


def _event(n: int) -> CanonicalEvent:
    return CanonicalEvent.build(source="lob", source_event_id=f"evt_{n}", type="mailed",
                                occurred_at=datetime(2026, 11, 20, tzinfo=UTC), mailpiece=Mailpiece(id=f"ltr_{n}"))


async def _calls(client: redis.asyncio.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def _together(url: str, flush_scripts: bool = False) -> tuple[list, list, dict[str, int]]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.set("k1", "v1")
        if flush_scripts:
            await client.script_flush()
        queue = IngestQueue(client, 3600)
        await asyncio.gather(queue.enqueue([_event(0)]), queue.get("k1"))  # connections made, script loaded
        before = await _calls(client)
        results = await asyncio.gather(queue.enqueue([_event(1)]), queue.get("k1"), queue.get("nope"),
                                       queue.enqueue([_event(2)], [("marker-2", 60)]))
        after = await _calls(client)
        queue.close()
        return results, [await client.xlen(keys.INGEST_STREAM) - 1, await client.ttl(keys.seen("marker-2"))], \
            {name: after.get(name, 0) - before.get(name, 0) for name in after}
    finally:
        await client.aclose()


def test_reads_and_events_share_the_round_trip(redis_url: str) -> None:
    results, (stream, ttl), commands = asyncio.run(_together(redis_url))
    assert results == [(1, 0), b"v1", None, (1, 0)]
    assert stream == 2 and 0 < ttl <= 60
    assert commands["get"] == 2 and commands["evalsha"] == 1  # one EVALSHA carrying both events, with the GETs


def test_a_flushed_script_cache_is_reloaded(redis_url: str) -> None:
    results, (stream, _), _ = asyncio.run(_together(redis_url, flush_scripts=True))
    assert results[:3] == [(1, 0), b"v1", None] and stream == 2


def test_reads_fail_like_enqueues_when_redis_is_down() -> None:
    async def run() -> None:
        client = redis.asyncio.Redis(port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        queue = IngestQueue(client, 3600)
        with pytest.raises(redis.exceptions.ConnectionError):
            await queue.get("k1")
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.gather(queue.get("k1"), queue.enqueue([_event(3)]))
        await client.aclose()

    asyncio.run(run())
