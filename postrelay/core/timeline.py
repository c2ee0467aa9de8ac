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
from redis.exceptions import NoScriptError

from postrelay.core import keys
from postrelay.core.events import RANK, TERMINAL, CanonicalEvent, EventType
from postrelay.core.redis_url import is_cluster
from postrelay.core.replies import members
from postrelay.core.stores import piece_codec as codec
from postrelay.core.stores.indexes import INDEX_LUA, IndexWriter, index_args
from postrelay.core.timeline_legacy import legacy_view

LEGACY = -1  # the script's answer for a piece still in the first layout

_RANKS = ", ".join(f"{codec.CODE[t.value]}={r}" for t, r in RANK.items())
_TERMINAL = ", ".join(f"{codec.CODE[t.value]}=true" for t in TERMINAL)

_C = str(codec.CHUNK)
# Lua helpers over the piece hash P: values split into ≤ 63-byte chunks (`f`, `f.1`, …) and deduplicated blobs.
CHUNKS_LUA = """
local function get(P, f)
  local v = redis.call('HGET', P, f)
  if not v then return nil end
  local parts, j = {v}, 1
  while true do
    local c = redis.call('HGET', P, f .. '.' .. j)
    if not c then break end
    parts[#parts + 1] = c
    j = j + 1
  end
  return table.concat(parts)
end
local function put(P, f, v)
  redis.call('HSET', P, f, string.sub(v, 1, """ + _C + """))
  local j = 1
  while j * """ + _C + """ < #v do
    redis.call('HSET', P, f .. '.' .. j, string.sub(v, j * """ + _C + """ + 1, (j + 1) * """ + _C + """))
    j = j + 1
  end
end
local function blob(P, v)
  local i = 0
  while true do
    local have = get(P, '_' .. i)
    if not have then put(P, '_' .. i, v) return tostring(i) end
    if have == v then return tostring(i) end
    i = i + 1
  end
end
"""

# KEYS: piece hash, then the first layout's timeline, events and types keys (a piece still in it answers -1)
# ARGV: 1 record field (12 hex), 2 type code, 3 rank, 4 stage time code (occurred), 5 whole (1/0), 6 piece part
#       (or the whole event JSON), 7 metadata.postrelay JSON ('' none), 8 record head, 9 record tail, 10 retention s,
#       11 index here (1/0), then (index here) the console index's 11 arguments (`postrelay.core.stores.indexes.index_args`;
#       they name keys on this same Redis; its state fields live in the piece hash)
# Returns {applied 0/1, stage code, the piece parts most recently used first}.
_APPLY = INDEX_LUA + CHUNKS_LUA + """
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local P = KEYS[1]
local RANK = {""" + _RANKS + """}
local TERMINAL = {""" + _TERMINAL + """}
local function answer(applied)
  local out = {applied, string.sub(redis.call('HGET', P, 's') or '-', 1, 1)}
  for ref in string.gmatch(redis.call('HGET', P, 'u') or '', '[^,]+') do out[#out + 1] = get(P, '_' .. ref) end
  return out
end
if redis.call('HEXISTS', P, ARGV[1]) == 1 then return answer(0) end
local s = redis.call('HGET', P, 's')
local stage = '-'
if s then stage = string.sub(s, 1, 1) end
local rank = tonumber(ARGV[3])
if (not TERMINAL[stage]) and rank > (RANK[stage] or 0) then
  stage = ARGV[2]
  redis.call('HSET', P, 's', stage .. ARGV[4])
end
local types = redis.call('HGET', P, 't') or ''
if not string.find(types, ARGV[2], 1, true) then redis.call('HSET', P, 't', types .. ARGV[2]) end
local ref = blob(P, ARGV[6])
if ARGV[5] == '1' then
  put(P, ARGV[1], stage .. '!' .. ref)
else
  local pr = ''
  if ARGV[7] ~= '' then pr = blob(P, ARGV[7]) end
  put(P, ARGV[1], stage .. ARGV[8] .. ref .. ',' .. pr .. ARGV[9])
end
local used = ref
for r in string.gmatch(redis.call('HGET', P, 'u') or '', '[^,]+') do
  if r ~= ref then used = used .. ',' .. r end
end
redis.call('HSET', P, 'u', used)
if ARGV[11] == '1' then ix_event(P, ARGV, 12) end
local ttl = tonumber(ARGV[10])
if ttl > 0 then redis.call('EXPIRE', P, ttl) end
return answer(1)
"""


def _keys(source: str, piece_id: str) -> list[str]:
    return [keys.piece(source, piece_id), keys.piece_timeline(source, piece_id), keys.piece_events(source, piece_id),
            keys.piece_types(source, piece_id)]


def _apply_args(event: CanonicalEvent, retention: float, index: bool = False) -> tuple[list[str], list[Any]]:
    enc = codec.encode(event)
    etype = EventType(event.type)
    return (_keys(*event.piece_key),
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
        self._script = redis.register_script(_APPLY)
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
            own = dict(codec.part_attrs(call[1][5]))  # the event's own attributes (its piece part)
            stored = codec.merged_attrs([bytes(b) for b in answer[2:]])
            out.append(applied.with_piece({p: v for p, v in stored.items() if p not in own}))  # those it lacks
        return out

    def _run(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        if self.cluster:
            return self._apply_cluster(calls)
        pipe = self.redis.pipeline(transaction=False)
        for k, a in calls:
            self._script(keys=k, args=a, client=pipe)
        return pipe.execute()

    def _apply_cluster(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """One cluster pipeline of EVALSHA calls (each on one piece's slot); loads the script where missing.

        A node without the script (new node, failover, restart) answers NOSCRIPT without running anything:
        the script is loaded on every primary and just those calls run again, in their order.
        """
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(3):
            pipe = self.redis.pipeline()
            for i in todo:
                k, a = calls[i]
                pipe.execute_command("EVALSHA", self._script.sha, len(k), *k, *a)
            answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError) and attempt < 2:
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[i] = answer
            if not missing:
                return results
            self.redis.script_load(_APPLY)  # on every primary
            todo = missing
        raise AssertionError("unreachable")  # pragma: no cover


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
