"""Each mailpiece's current stage and full timeline, in Redis.

The worker applies events with one atomic script per event: idempotent (an event id already in the
timeline changes nothing), monotonic (the stage only moves forward by lifecycle rank) and sticky for
terminal stages. The stored event JSON carries the stage the piece reached with it.

The piece hash also keeps the piece's attributes (`postrelay.events.PIECE_ATTRS`: kind, country, campaign,
mailing class, tracking number, recipient), each the last non-empty value an event sent; the script returns the
stored values of those the event lacks and the writer attaches them to the event (`CanonicalEvent.with_piece`),
so a route or follow-up filter on `country` matches a QR visit or a cancellation that carries no address.

Every key a script call touches belongs to one mailpiece (one hash tag, one Redis Cluster slot), so the
store may be a Redis Cluster (`[server] redis_url = "redis+cluster://…"`): a batch is then one cluster
pipeline, which sends each node its pieces' calls in order, in parallel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from postrelay import keys
from postrelay.events import PIECE_ATTRS, RANK, TERMINAL, CanonicalEvent, EventType
from postrelay.redis_url import is_cluster
from postrelay.stores.indexes import ARGC as INDEX_ARGC
from postrelay.stores.indexes import INDEX_LUA, IndexWriter, index_args

# Piece hash field of each attribute: `kind` and `country` (read API) keep their names, the others their path.
_HASH_FIELD = {path: path.removeprefix("mailpiece.") if path in ("mailpiece.kind", "mailpiece.country") else path
               for path in PIECE_ATTRS}
_FIELDS = [_HASH_FIELD[p] for p in PIECE_ATTRS]
_MAILPIECE_ATTRS = [p.removeprefix("mailpiece.") for p in PIECE_ATTRS if p.startswith("mailpiece.")]
_RECIPIENT_ATTRS = [p.removeprefix("recipient.") for p in PIECE_ATTRS if p.startswith("recipient.")]
_COUNTRY_AT = PIECE_ATTRS.index("mailpiece.country")  # the piece's country: the mailpiece's, else the recipient's

# KEYS: piece hash, timeline zset, events hash, types set
# ARGV: event id, occurred_at epoch, type, rank, terminal(0/1), json head, json tail, N, (unused),
#       occurred_at iso, retention seconds, index here (1/0), then (index here) the console index's 11 arguments
#       (`postrelay.stores.indexes.index_args`; they name keys on this same Redis), then N items: (hash field,
#       value) pairs of the piece attributes the event has, then the hash fields of those it lacks (read back)
# Returns {applied 0/1, stage, values of the lacking fields (false = unknown)}.
_APPLY = INDEX_LUA + """
local pairs_from = 13
if ARGV[12] == '1' then pairs_from = 13 + """ + str(INDEX_ARGC) + """ end
local pairs_end = pairs_from - 1 + tonumber(ARGV[8])
local function lacking()
  if #ARGV > pairs_end then return redis.call('HMGET', KEYS[1], unpack(ARGV, pairs_end + 1)) end
  return {}
end
local existing = redis.call('HGET', KEYS[3], ARGV[1])
if existing then
  return {0, redis.call('HGET', KEYS[1], 'stage') or '', lacking()}
end
local stage = redis.call('HGET', KEYS[1], 'stage')
local stage_rank = tonumber(redis.call('HGET', KEYS[1], 'stage_rank') or '0')
local stage_terminal = redis.call('HGET', KEYS[1], 'stage_terminal') == '1'
local rank = tonumber(ARGV[4])
if (not stage_terminal) and rank > stage_rank then
  stage = ARGV[3]
  redis.call('HSET', KEYS[1], 'stage', stage, 'stage_rank', rank, 'stage_terminal', ARGV[5], 'stage_at', ARGV[10])
end
if pairs_end >= pairs_from then redis.call('HSET', KEYS[1], unpack(ARGV, pairs_from, pairs_end)) end
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[10])
local stage_json = 'null'
if stage then stage_json = '"' .. stage .. '"' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6] .. stage_json .. ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
if ARGV[12] == '1' then ix_event(KEYS[1], ARGV, 13) end
local ttl = tonumber(ARGV[11])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {1, stage or '', lacking()}
"""
_SENTINEL = '"stage":"__postrelay_stage__"'


def _apply_args(event: CanonicalEvent, retention: float,
                index: bool = False) -> tuple[list[str], list[Any], list[str]]:
    """(keys, args, paths of the piece attributes the event lacks: the script returns their stored values)."""
    raw = event.model_copy(update={"stage": None}).model_dump_json()
    head, sep, tail = raw.replace('"stage":null', _SENTINEL, 1).partition(_SENTINEL)
    if not sep:
        raise ValueError("serialized event has no stage field")
    etype = EventType(event.type)
    src, pid = event.piece_key
    mp, rc = event.mailpiece, event.recipient
    values = [getattr(mp, name) for name in _MAILPIECE_ATTRS] + [getattr(rc, name) for name in _RECIPIENT_ATTRS]
    values[_COUNTRY_AT] = values[_COUNTRY_AT] or rc.country
    present: list[Any] = []
    lacking: list[str] = []
    for path, field, value in zip(PIECE_ATTRS, _FIELDS, values, strict=True):
        if value:
            present += (field, value)
        else:
            lacking.append(path)
    return (
        [keys.piece(src, pid), keys.piece_timeline(src, pid), keys.piece_events(src, pid), keys.piece_types(src, pid)],
        [event.id, event.occurred_at.timestamp(), etype.value, RANK.get(etype, 0), int(etype in TERMINAL),
         head + '"stage":', tail, len(present), "", event.occurred_at.isoformat(), int(retention),
         *((1, *index_args(event)) if index else (0,)), *present, *(_HASH_FIELD[p] for p in lacking)],
        lacking,
    )


def _piece_attrs(paths: Sequence[str], values: Sequence[Any]) -> dict[str, str]:
    return {path: v.decode() if isinstance(v, bytes) else str(v) for path, v in zip(paths, values, strict=True) if v}


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
        if self.cluster:
            results = self._apply_cluster(calls)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for k, a, _ in calls:
                self._script(keys=k, args=a, client=pipe)
            results = pipe.execute()
        if self.index is not None:  # after the timelines: a crash in between re-runs the batch, which is exact
            self.index.apply_many(events)
        out = []
        for event, (_, _, lacking), (_, stage, stored) in zip(events, calls, results, strict=True):
            stage_s = stage.decode() if isinstance(stage, bytes) else stage
            applied = event.model_copy(update={"stage": EventType(stage_s) if stage_s else None})
            out.append(applied.with_piece(_piece_attrs(lacking, stored)))
        return out

    def _apply_cluster(self, calls: list[tuple[list[str], list[Any], list[str]]]) -> list[Any]:
        """One cluster pipeline of EVALSHA calls (each on one piece's slot); loads the script where missing.

        A node without the script (new node, failover, restart) answers NOSCRIPT without running anything:
        the script is loaded on every primary and just those calls run again, in their order.
        """
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(3):
            pipe = self.redis.pipeline()
            for i in todo:
                k, a, _ = calls[i]
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
    pipe.zrange(keys.piece_timeline(source, piece_id), 0, -1)
    state, ids = await pipe.execute()
    if not state:
        return None
    raw_events = await redis.hmget(keys.piece_events(source, piece_id), ids) if ids else []
    state = {k.decode(): v.decode() for k, v in state.items()}
    return {
        "source": source,
        "id": piece_id,
        "kind": state.get("kind"),
        "country": state.get("country"),
        "stage": state.get("stage"),
        "stage_at": state.get("stage_at"),
        "events": [json.loads(r) for r in raw_events if r is not None],
    }
