"""Redis memory per mailpiece: the compact layout against the first layout and the raw canonical JSON, same run.

The same PostGrid `letter.updated` events (full order: recipient, metadata) are applied to a fresh Redis with
the first layout's writer (`postrelay.core.timeline_legacy`, "today's layout": state hash, timeline zset, events
hash, types set) and with the worker's (`postrelay.core.timeline`, one listpack hash per piece); the long-lived
bytes of each piece are `MEMORY USAGE` summed over its keys (dedupe and done markers expire and are left out).
Six lifecycle events per piece: printed, mailed, in_transit, in_local_area, processed_for_delivery (IMb scans
with a ZIP), delivered.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bench.context import Context
from bench.payloads import body_for
from bench.report import Row, at_most
from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, EventType, Location, event_id

ONE_EVENT_TARGET = 600.0
SCANS = (EventType.IN_TRANSIT, EventType.IN_LOCAL_AREA, EventType.PROCESSED_FOR_DELIVERY)


def piece_events(index: int) -> list[CanonicalEvent]:
    """Six lifecycle events of bench mailpiece `index`, as the receiver normalizes them."""
    from postrelay.receiver.providers import postgrid

    now = datetime.now(UTC)
    printed, mailed, delivered = (postgrid.normalize(json.loads(body_for("m", index, s)), now).events[0]
                                  for s in range(3))
    scans = []
    for n, etype in enumerate(SCANS):
        sid = f"{mailed.source_event_id}-imb{n}"
        scans.append(mailed.model_copy(update={
            "type": etype, "stage": etype, "source_event_id": sid, "id": event_id("postgrid", sid, etype.value),
            "location": Location(zip="94107"), "occurred_at": mailed.occurred_at.replace(hour=n + 1)}))
    return [printed, mailed, *scans, delivered]


def _measure(r: Any, writer: Any, pieces: list[list[CanonicalEvent]], n_events: int) -> float:
    r.flushall()
    for events in pieces:
        writer.apply_many(events[:n_events])
    total = 0
    for events in pieces:
        src, pid = events[0].piece_key
        for name in (keys.piece(src, pid), keys.piece_timeline(src, pid), keys.piece_events(src, pid),
                     keys.piece_types(src, pid)):
            total += int(r.memory_usage(name, samples=0) or 0)
    return total / len(pieces)


def run(ctx: Context) -> list[Row]:
    from postrelay.core.timeline import TimelineWriter
    from postrelay.core.timeline_legacy import LegacyTimelineWriter

    n = 20 if ctx.profile.name == "smoke" else 200
    import redis

    r = ctx.redis.r
    pieces = [piece_events(i) for i in range(n)]
    retention = 400 * 86400
    # the timeline store alone (the console's index state in its own key, on another client), then as the worker
    # writes on a single Redis (that state in the piece hash)
    other = redis.Redis.from_url(ctx.redis.url)
    writers = (("old", LegacyTimelineWriter(r, retention)), ("new", TimelineWriter(r, retention, other)),
               ("indexed", TimelineWriter(r, retention)))
    size = {(name, k): _measure(r, w, pieces, k) for name, w in writers for k in (1, 6)}
    other.close()
    raw = {k: sum(len(e.model_dump_json()) for ev in pieces for e in ev[:k]) / n for k in (1, 6)}
    ctx.redis.reset()
    ctx.raw["memory_layout"] = {"pieces": n, "bytes": {f"{a}_{k}": v for (a, k), v in size.items()},
                                "canonical_json": raw}
    note = (f"{n} PostGrid pieces (recipient, metadata); MEMORY USAGE summed over each piece's keys; raw canonical "
            f"JSON {raw[1]:,.0f} B (1 event) / {raw[6]:,.0f} B (6 events)")
    per_event_new = (size["new", 6] - size["new", 1]) / 5
    per_event_old = (size["old", 6] - size["old", 1]) / 5
    rows = [
        Row("memory", "mailpiece layout: Redis per piece, 1 event (compact)", "B", size["new", 1],
            "today's layout (4 keys), same events", size["old", 1], f"≤ {ONE_EVENT_TARGET:g} B",
            at_most(size["new", 1], ONE_EVENT_TARGET), note=note),
        Row("memory", "mailpiece layout: Redis per piece, 6 lifecycle events (compact)", "B", size["new", 6],
            "today's layout (4 keys), same events", size["old", 6], "≤ 1/5 of today's (ratio ≤ 0.20x)",
            at_most(size["new", 6] / size["old", 6], 0.2)),
        Row("memory", "mailpiece layout: Redis per further event (compact)", "B", per_event_new,
            "today's layout", per_event_old),
        Row("memory", "mailpiece layout: Redis per piece, 6 events (compact) vs raw JSON", "B", size["new", 6],
            "the 6 canonical events' JSON (bytes)", raw[6]),
        Row("memory", "mailpiece layout: Redis per piece, 6 events, with the console's index state", "B",
            size["indexed", 6], "today's layout (4 keys), same events", size["old", 6],
            "≤ 1/5 of today's (ratio ≤ 0.20x)", at_most(size["indexed", 6] / size["old", 6], 0.2),
            note=f"1 event: {size['indexed', 1]:,.0f} B; the console's sorted-set indexes (pr:ix:*) are not counted"),
    ]
    return rows
