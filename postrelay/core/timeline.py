"""Each mailpiece's current stage and full timeline, in Redis: one compact hash per piece.

The worker applies events with one atomic script per event: idempotent (an event already recorded changes
nothing), monotonic (the stage only moves forward by lifecycle rank) and sticky for terminal stages. Each event
record keeps the stage the piece reached with it. The layout (`postrelay.core.stores.piece_codec`) stores the
recipient and the piece's attributes once per piece and a ≤ 63-byte record per event, so the hash keeps Redis'
listpack encoding; the events are rebuilt exactly (the read API's JSON is what the first layout answered).

The script returns the piece's attributes (`postrelay.core.events.PIECE_ATTRS`: the last non-empty value an event
sent, from the most recently used piece parts) and the writer attaches them to the event
(`CanonicalEvent.with_piece`), so a route or follow-up filter on `country` matches a QR visit or a
cancellation that carries no address.

A piece still in the first layout (`postrelay.core.timeline_legacy`, before `postrelay migrate` reached it) is moved
to this one when an event for it arrives (`postrelay.core.stores.migrate.migrate_piece`, atomic), then the event is
applied; the readers accept both layouts.

Every key a script call touches belongs to one mailpiece (one hash tag, one Redis Cluster slot), so the
store may be a Redis Cluster (`[server] redis_url = "redis+cluster://…"`): a batch is then one cluster
pipeline, which sends each node its pieces' calls in order, in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from postrelay.core import keys
from postrelay.core.events import RANK, TERMINAL, CanonicalEvent, EventType
from postrelay.core.redis_url import is_cluster
from postrelay.core.replies import members
from postrelay.core.scripts import Lua, lua
from postrelay.core.stores import piece_codec as codec
from postrelay.core.stores.indexes import LUA_CONSTANTS, IndexWriter, index_args
from postrelay.core.timeline_legacy import legacy_view

LEGACY = -1  # the script's answer for a piece still in the first layout

# The constants of `postrelay/core/lua/timeline_apply.lua` (with the index's, whose fragment it includes)
APPLY_CONSTANTS: dict[str, Any] = {
    **LUA_CONSTANTS,
    "CHUNK": codec.CHUNK,
    "CODE_RANK": {codec.CODE[t.value]: r for t, r in RANK.items()},
    "CODE_TERMINAL": {codec.CODE[t.value]: True for t in sorted(TERMINAL)},
}


def apply_script() -> Lua:
    """`timeline_apply.lua`, loaded once."""
    return lua("timeline_apply", **APPLY_CONSTANTS)


def _apply_args(event: CanonicalEvent, retention: float, index: bool = False) -> tuple[list[str], list[Any]]:
    enc = codec.encode(event)
    etype = EventType(event.type)
    return (keys.piece_keys(*event.piece_key),
            [enc.eid, codec.CODE[etype.value], RANK.get(etype, 0), codec.time_code(event.occurred_at),
             int(enc.whole), enc.part, enc.postrelay, enc.head, enc.tail, int(retention),
             *((1, *index_args(event)) if index else (0,))])


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class TimelineWriter:
    """Applies canonical events to mailpiece state and the console's indexes (sync; used by the worker).

    `index` is the queue Redis, where the indexes live: the same client as `redis` (or None) indexes in the
    timeline's own script; another Redis (the mailpieces on a cluster) gets a second, idempotent script.
    """

    def __init__(self, redis: Redis | RedisCluster, retention: float, index: Redis | None = None) -> None:
        self.redis = redis
        self.retention = retention
        self._script = apply_script()
        self.cluster = is_cluster(redis)
        self.inline_index = not self.cluster and (index is None or index is redis)
        self.index = None if self.inline_index or index is None else IndexWriter(index, retention)

    def apply_many(self, events: Sequence[CanonicalEvent]) -> list[CanonicalEvent]:
        """Apply events in order in one pipeline; returns them with `stage` set to the piece's stage after each."""
        if not events:
            return []
        calls = [_apply_args(event, self.retention, self.inline_index) for event in events]
        results = self._run(calls)
        for _ in range(3):  # pieces still in the first layout: moved, then their events applied (in order)
            legacy = [i for i, r in enumerate(results) if int(r[0]) == LEGACY]
            if not legacy:
                break
            from postrelay.core.stores.migrate import migrate_piece

            for piece in dict.fromkeys(events[i].piece_key for i in legacy):
                migrate_piece(self.redis, *piece)
            for i, answer in zip(legacy, self._run([calls[i] for i in legacy]), strict=True):
                results[i] = answer
        if self.index is not None:  # after the timelines: a crash in between re-runs the batch, which is exact
            self.index.apply_many(events)
        out = []
        for event, call, answer in zip(events, calls, results, strict=True):
            if int(answer[0]) == LEGACY:
                raise RuntimeError(f"mailpiece {event.piece_key} stays in the first layout")
            stage = codec.stage_of(_text(answer[1]))
            applied = event.model_copy(update={"stage": EventType(stage) if stage else None})
            part, blobs = call[1][5], [bytes(b) for b in answer[2:]]
            if all(blob == part for blob in blobs):  # the piece knows only what this event sent
                out.append(applied.with_piece({}))
                continue
            own = dict(codec.part_attrs(part))  # the event's own attributes (its piece part)
            stored = codec.merged_attrs(blobs)
            out.append(applied.with_piece({p: v for p, v in stored.items() if p not in own}))  # those it lacks
        return out

    def _run(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        return self._script.many(self.redis, calls)


async def read_piece(redis: AsyncRedis | AsyncRedisCluster, source: str, piece_id: str) -> dict[str, Any] | None:
    """The public view of a mailpiece: state plus events ordered by occurrence; None if unknown."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.piece(source, piece_id))
    pipe.exists(keys.piece_events(source, piece_id))
    state, legacy = await pipe.execute()
    if not state:
        return None
    if not legacy:
        return codec.decode_piece(state, source, piece_id)
    ids = members(await redis.zrange(keys.piece_timeline(source, piece_id), 0, -1))
    raw_events = await redis.hmget(keys.piece_events(source, piece_id), ids) if ids else []
    return legacy_view(state, raw_events, source, piece_id)


def load_piece(redis: Redis | RedisCluster, source: str, piece_id: str) -> dict[str, Any] | None:
    """`read_piece` for sync callers (migration, tools, tests)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.piece(source, piece_id))
    pipe.exists(keys.piece_events(source, piece_id))
    pipe.zrange(keys.piece_timeline(source, piece_id), 0, -1)
    state, legacy, ids = pipe.execute()
    if not state:
        return None
    if not legacy:
        return codec.decode_piece(state, source, piece_id)
    raw_events = redis.hmget(keys.piece_events(source, piece_id), ids) if ids else []
    return legacy_view(state, raw_events, source, piece_id)


def seen_types(redis: Redis | RedisCluster, pieces: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """The event types each piece had, in either layout (follow-up `unless`); one pipeline."""
    pipe = redis.pipeline(transaction=False)
    for src, pid in pieces:
        pipe.hget(keys.piece(src, pid), "t")
        pipe.smembers(keys.piece_types(src, pid))
    answers = pipe.execute()
    out = {}
    for n, piece in enumerate(pieces):
        codes, legacy = answers[2 * n], answers[2 * n + 1]
        out[piece] = {codec.TYPE_OF[c] for c in _text(codes or b"") if c in codec.TYPE_OF} | {_text(t) for t in legacy}
    return out
