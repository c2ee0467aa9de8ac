"""The first mailpiece layout (before `postrelay migrate`): four keys per piece, each event's whole JSON.

`pr:piece:{…}` (stage, stage_rank, stage_terminal, stage_at, first_seen, the piece attributes), `…:timeline`
(event ids by occurrence), `…:events` (id -> canonical JSON with the stage reached) and `…:types`. The worker no
longer writes it (`postrelay.core.timeline` moves a piece in this layout to the compact one when an event arrives);
`LegacyTimelineWriter` stays for the migration's tests and the memory bench, the readers until every piece moved.
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

from postrelay.core import keys
from postrelay.core.events import PIECE_ATTRS, RANK, TERMINAL, CanonicalEvent, EventType
from postrelay.core.redis_url import is_cluster

# Piece hash field of each attribute: `kind` and `country` (read API) keep their names, the others their path.
_HASH_FIELD = {path: path.removeprefix("mailpiece.") if path in ("mailpiece.kind", "mailpiece.country") else path
               for path in PIECE_ATTRS}
_LUA_FIELDS = ", ".join(f"'{f}'" for f in _HASH_FIELD.values())

# KEYS: piece hash, timeline zset, events hash, types set
# ARGV: event id, occurred_at epoch, type, rank, terminal(0/1), json head, json tail, kind, country,
#       occurred_at iso, retention seconds, then (hash field, value) pairs of the event's other piece attributes
# Returns {applied 0/1, stage, piece attribute values (in PIECE_ATTRS order; false = none)}.
_APPLY = """
local fields = {""" + _LUA_FIELDS + """}
local existing = redis.call('HGET', KEYS[3], ARGV[1])
if existing then
  return {0, redis.call('HGET', KEYS[1], 'stage') or '', redis.call('HMGET', KEYS[1], unpack(fields))}
end
local stage = redis.call('HGET', KEYS[1], 'stage')
local stage_rank = tonumber(redis.call('HGET', KEYS[1], 'stage_rank') or '0')
local stage_terminal = redis.call('HGET', KEYS[1], 'stage_terminal') == '1'
local rank = tonumber(ARGV[4])
if (not stage_terminal) and rank > stage_rank then
  stage = ARGV[3]
  redis.call('HSET', KEYS[1], 'stage', stage, 'stage_rank', rank, 'stage_terminal', ARGV[5], 'stage_at', ARGV[10])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'kind', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'country', ARGV[9]) end
for i = 12, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[10])
local stage_json = 'null'
if stage then stage_json = '"' .. stage .. '"' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6] .. stage_json .. ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
local ttl = tonumber(ARGV[11])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {1, stage or '', redis.call('HMGET', KEYS[1], unpack(fields))}
"""
_SENTINEL = '"stage":"__postrelay_stage__"'


def _apply_args(event: CanonicalEvent, retention: float) -> tuple[list[str], list[Any]]:
    raw = event.model_copy(update={"stage": None}).model_dump_json()
    head, sep, tail = raw.replace('"stage":null', _SENTINEL, 1).partition(_SENTINEL)
    if not sep:
        raise ValueError("serialized event has no stage field")
    etype = EventType(event.type)
    src, pid = event.piece_key
    extra: list[Any] = []
    mp, rc = event.mailpiece, event.recipient
    for path, value in (("mailpiece.campaign_id", mp.campaign_id), ("mailpiece.mailing_class", mp.mailing_class),
                        ("mailpiece.tracking_number", mp.tracking_number)):
        if value:
            extra += (path, value)
    for name, value in rc:
        if value:
            extra += (f"recipient.{name}", value)
    return (
        [keys.piece(src, pid), keys.piece_timeline(src, pid), keys.piece_events(src, pid), keys.piece_types(src, pid)],
        [event.id, event.occurred_at.timestamp(), etype.value, RANK.get(etype, 0), int(etype in TERMINAL),
         head + '"stage":', tail, mp.kind or "", mp.country or rc.country or "",
         event.occurred_at.isoformat(), int(retention), *extra],
    )


def _piece_attrs(values: Sequence[Any]) -> dict[str, str]:
    return {path: v.decode() if isinstance(v, bytes) else str(v)
            for path, v in zip(PIECE_ATTRS, values, strict=True) if v}


class LegacyTimelineWriter:
    """Applies canonical events in the first layout (tests and the memory bench only)."""

    def __init__(self, redis: Redis | RedisCluster, retention: float) -> None:
        self.redis = redis
        self.retention = retention
        self._script = redis.register_script(_APPLY)
        self.cluster = is_cluster(redis)

    def apply_many(self, events: Sequence[CanonicalEvent]) -> list[CanonicalEvent]:
        """Apply events in order in one pipeline; returns them with `stage` set to the piece's stage after each."""
        if not events:
            return []
        calls = [_apply_args(event, self.retention) for event in events]
        if self.cluster:
            results = self._apply_cluster(calls)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for k, a in calls:
                self._script(keys=k, args=a, client=pipe)
            results = pipe.execute()
        out = []
        for event, (_, stage, attrs) in zip(events, results, strict=True):
            stage_s = stage.decode() if isinstance(stage, bytes) else stage
            applied = event.model_copy(update={"stage": EventType(stage_s) if stage_s else None})
            out.append(applied.with_piece(_piece_attrs(attrs)))
        return out

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


def legacy_view(state: dict[bytes, bytes], raw_events: Sequence[bytes | str | None], source: str,
                piece_id: str) -> dict[str, Any]:
    """The public view of a piece in this layout: its state hash and its events' JSON in timeline order."""
    st = {k.decode(): v.decode() for k, v in state.items()}
    return {
        "source": source,
        "id": piece_id,
        "kind": st.get("kind"),
        "country": st.get("country"),
        "stage": st.get("stage"),
        "stage_at": st.get("stage_at"),
        "events": [json.loads(r) for r in raw_events if r is not None],
    }


async def read_legacy(redis: AsyncRedis | AsyncRedisCluster, source: str, piece_id: str) -> dict[str, Any] | None:
    """A piece in this layout (None if unknown)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.piece(source, piece_id))
    pipe.zrange(keys.piece_timeline(source, piece_id), 0, -1)
    state, ids = await pipe.execute()
    if not state:
        return None
    raw_events = await redis.hmget(keys.piece_events(source, piece_id), ids) if ids else []
    return legacy_view(state, raw_events, source, piece_id)
