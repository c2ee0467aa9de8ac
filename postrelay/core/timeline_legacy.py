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

from postrelay.core import keys
from postrelay.core.events import PIECE_ATTRS, RANK, TERMINAL, CanonicalEvent, EventType
from postrelay.core.scripts import lua

# Piece hash field of each attribute: `kind` and `country` (read API) keep their names, the others their path.
_HASH_FIELD = {path: path.removeprefix("mailpiece.") if path in ("mailpiece.kind", "mailpiece.country") else path
               for path in PIECE_ATTRS}
# The constants of `postrelay/core/lua/timeline_legacy_apply.lua`
APPLY_CONSTANTS: dict[str, Any] = {"FIELDS": list(_HASH_FIELD.values())}
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
        keys.piece_keys(src, pid),
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
        self._script = lua("timeline_legacy_apply", **APPLY_CONSTANTS)

    def apply_many(self, events: Sequence[CanonicalEvent]) -> list[CanonicalEvent]:
        """Apply events in order in one pipeline; returns them with `stage` set to the piece's stage after each."""
        if not events:
            return []
        calls = [_apply_args(event, self.retention) for event in events]
        results = self._script.many(self.redis, calls)
        out = []
        for event, (_, stage, attrs) in zip(events, results, strict=True):
            stage_s = stage.decode() if isinstance(stage, bytes) else stage
            applied = event.model_copy(update={"stage": EventType(stage_s) if stage_s else None})
            out.append(applied.with_piece(_piece_attrs(attrs)))
        return out


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
