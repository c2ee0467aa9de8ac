"""The overview page's numbers, read from Redis in one round trip (plus the destination report)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from postrelay.core import keys, stats

HOURS = 3
BUCKET = 5  # minutes per point of the events chart


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def gather(receiver: Any) -> dict[str, Any]:
    """Events per minute by source (last `HOURS` hours), deliveries by destination and outcome, dead letters,
    follow-ups pending and the next due, workers alive, and each destination's circuit and paused state."""
    r, config, now = receiver.redis, receiver.config, receiver.clock()
    minutes = stats.source_minute_keys(now, HOURS * 60)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(stats.STATS)
    pipe.hlen(keys.DLQ)
    pipe.zcard(keys.FOLLOWUPS_DUE)
    pipe.zrange(keys.FOLLOWUPS_DUE, 0, 0, withscores=True)
    pipe.hgetall(keys.WORKER_HEARTBEATS)
    for _, key in minutes:
        pipe.hgetall(key)
    res = await pipe.execute()
    totals, dead, fu_pending, fu_next, beats, per_minute = res[0], res[1], res[2], res[3], res[4], res[5:]
    deliveries, _ = stats.parse_stats(totals)
    by_dest: dict[str, dict[str, int]] = {name: dict.fromkeys(stats.OUTCOMES, 0) for name in config.destinations}
    for (dest, outcome), n in deliveries.items():
        by_dest.setdefault(dest, dict.fromkeys(stats.OUTCOMES, 0))[outcome] = n
    sources = sorted({_text(k) for h in per_minute for k in h})
    # per-minute rates averaged over BUCKET minutes: 36 points over three hours instead of 180 spikes
    series = {s: [sum(float(_text(h.get(s.encode(), b"0"))) for h in per_minute[i:i + BUCKET]) / BUCKET
                  for i in range(0, len(per_minute), BUCKET)] for s in sources}
    labels = [datetime.fromtimestamp(m * 60, UTC).strftime("%H:%M") for m, _ in minutes[::BUCKET]]
    ages = stats.heartbeat_ages(beats, now)
    alive = sum(1 for a in ages.values() if a <= config.server.worker_stale_after)
    next_due = None
    if fu_next:
        fid, score = fu_next[0]
        next_due = {"id": _text(fid), "due": datetime.fromtimestamp(score, UTC).isoformat()}
    destinations = await receiver_destinations(receiver)
    return {
        "events_per_minute": {"labels": labels, "series": series,
                              "total": round(sum(sum(v) for v in series.values()) * BUCKET)},
        "deliveries": by_dest,
        "dead_letters": int(dead),
        "followups": {"pending": int(fu_pending), "next": next_due},
        "workers": {"alive": alive, "registered": len(ages)},
        "destinations": destinations,
        "open_circuits": [d["name"] for d in destinations if d["state"] != "closed"],
        "paused": [d["name"] for d in destinations if d["paused"]],
    }


async def receiver_destinations(receiver: Any) -> list[dict[str, Any]]:
    """The destination report (circuit, paused, backlog, dead, last error), as the operations API gives it."""
    from postrelay.receiver.api import operations

    return await operations.destination_report(receiver)
