"""`postrelay migrate`: move mailpieces from the first layout (`postrelay.core.timeline_legacy`) to the compact one.

Each piece moves in one atomic script (`postrelay/core/lua/piece_migrate.lua`) that first checks its events
hash still has the events read (an event applied meanwhile makes it answer "changed": the piece is read again),
so it is safe while receiving; the worker moves a piece itself when an event for it arrives. A piece moved is
no longer in the first layout, so an interrupted run resumes by running again: it finds only the pieces left
(a run also records its progress in `pr:migrate`). Fields of the piece hash that are not the first layout's
(e.g. the console's index state) stay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster

from postrelay.core import keys
from postrelay.core.scripts import lua
from postrelay.core.stores import piece_codec as codec

STATUS = keys.MIGRATE_STATUS  # hash: started, finished, migrated, total (on the pieces store)
# Fields the first layout keeps in the piece hash besides the piece attributes
_LEGACY_STATE = ("stage", "stage_rank", "stage_terminal", "stage_at", "first_seen", "kind", "country")

Progress = Callable[[int, int], None]


def convert(state: dict[bytes, bytes], events: dict[bytes, bytes], types: set[bytes]) -> list[tuple[str, bytes]]:
    """The compact fields of a first-layout piece (each event as stored; parts in order of reception)."""
    docs = []
    for raw in events.values():
        doc = json.loads(raw)
        docs.append((str(doc.get("received_at", "")), str(doc.get("id", "")), doc, raw))
    docs.sort(key=lambda d: (d[0], d[1]))
    blobs: list[bytes] = []
    used: list[str] = []
    out: list[tuple[str, bytes]] = []

    def blob(value: bytes) -> str:
        if value not in blobs:
            blobs.append(value)
            out.extend(codec.chunks(f"_{len(blobs) - 1}", value))
        return str(blobs.index(value))

    for _, _, doc, raw in docs:
        stage = codec.stage_code(doc.get("stage")) if doc.get("stage") in codec.CODE else codec.NO_STAGE
        enc = codec.encode_dict(doc) if isinstance(doc.get("id"), str) else None
        if enc is None or enc.whole:  # stored exactly as it was (stage included)
            ref = blob(raw if isinstance(raw, bytes) else raw.encode())
            record = f"{stage}!{ref}"
            eid = codec.event_key(str(doc.get("id", ""))) if enc is None else enc.eid
        else:
            ref = blob(enc.part)
            pr = blob(enc.postrelay) if enc.postrelay else ""
            record, eid = f"{stage}{enc.head}{ref},{pr}{enc.tail}", enc.eid
        out.extend(codec.chunks(eid, record.encode()))
        used = [ref, *[r for r in used if r != ref]]
    st = {k.decode(): v.decode() for k, v in state.items()}
    if st.get("stage") in codec.CODE and st.get("stage_at"):
        from datetime import datetime

        code = codec.time_code(datetime.fromisoformat(st["stage_at"]))
        out.append(("s", f"{codec.CODE[st['stage']]}{code}".encode()))
    seen = {t.decode() for t in types} | {str(d[2].get("type")) for d in docs}
    out.append(("t", "".join(codec.CODE[t] for t in codec.TYPES if t in seen).encode()))
    out.append(("u", ",".join(used).encode()))
    return out


def migrate_piece(r: Redis | RedisCluster, source: str, piece_id: str) -> int:
    """Move one piece (1), nothing to move (0); re-reads a piece that changed while it was read."""
    names = keys.piece_keys(source, piece_id)
    script = lua("piece_migrate")
    for _ in range(10):
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(names[0])
        pipe.hgetall(names[2])
        pipe.smembers(names[3])
        pipe.pttl(names[0])
        state, events, types, pttl = pipe.execute()
        if not events:
            return 0
        new = convert(state, events, types)
        drop = [k.decode() for k in state if k.decode() in _LEGACY_STATE or k.decode().startswith(
            ("mailpiece.", "recipient."))]
        flat = [x for pair in new for x in pair]
        answer = int(script(r, keys=names, args=[len(events), pttl, len(drop), *drop, *flat]))
        if answer >= 0:
            return answer
    raise RuntimeError(f"mailpiece {source}:{piece_id} kept changing while it was migrated")


def legacy_pieces(r: Redis | RedisCluster) -> Iterator[tuple[str, str]]:
    """(source, piece id) of every piece still in the first layout (SCAN; every node of a cluster)."""
    for raw in r.scan_iter(match=keys.PIECE_PREFIX + "*}" + keys.PIECE_EVENTS_SUFFIX, count=1000):
        piece = keys.piece_of(raw, keys.PIECE_EVENTS_SUFFIX)
        if piece:
            yield piece


def migrate(r: Redis | RedisCluster, progress: Progress | None = None,
            stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Move every piece; progress(done, total). Returns {"migrated", "total", "left"}; `stop` ends it early."""
    total = sum(1 for _ in legacy_pieces(r))
    r.hset(STATUS, mapping={"started": time.time(), "total": total})
    done = 0
    if progress:
        progress(0, total)
    for source, piece_id in legacy_pieces(r):
        if stop is not None and stop():
            break
        done += migrate_piece(r, source, piece_id)
        r.hincrby(STATUS, "migrated", 1)
        if progress:
            progress(done, max(total, done))
    left = sum(1 for _ in legacy_pieces(r))
    if not left:
        r.hset(STATUS, "finished", time.time())
    return {"migrated": done, "total": total, "left": left}
