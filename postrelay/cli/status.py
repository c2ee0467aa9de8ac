"""`postrelay status`: one screen on the whole system, read from Redis (no worker or receiver is asked).

Ingest stream length and entries read but not yet acknowledged, deliveries (due now, due later, overdue),
workers alive (heartbeat younger than `[server] worker_stale_after`), each destination's circuit and backlog,
the dead-letter store, pending follow-ups and the next one due, and events processed in the last hour by
type (from the dispatcher's per-minute counters, `postrelay.core.stats`). When the mailpieces live on another
Redis (`[server] queue_url` set beside `redis_url`), it is shown too: for a Redis Cluster, each primary with
its key count.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster

from postrelay.core import keys, stats
from postrelay.core.redaction import mask_url
from postrelay.core.stores import deliveries, destinations

if TYPE_CHECKING:
    from postrelay.workers.runtime import Runtime


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def pieces_store(rt: Runtime) -> dict[str, Any] | None:
    """The mailpiece store when it is not the queue Redis: its URL and, for a cluster, each primary's keys."""
    from postrelay.core.redis_url import is_cluster

    pieces = rt.piece_store
    if pieces is rt.redis:
        return None
    out: dict[str, Any] = {"redis": mask_url(rt.config.server.redis_url), "cluster": is_cluster(pieces)}
    if isinstance(pieces, RedisCluster):
        out["nodes"] = [{"node": node.name, "keys": int(pieces.dbsize(target_nodes=node))}
                        for node in sorted(pieces.get_primaries(), key=lambda n: n.name)]
    else:
        out["keys"] = int(pieces.dbsize())
    return out


def gather(rt: Runtime) -> dict[str, Any]:
    """Everything the status screen shows, as plain data (also the `--json` output)."""
    r = rt.redis
    now = rt.clock()
    pipe = r.pipeline(transaction=False)
    pipe.xlen(keys.INGEST_STREAM)
    pipe.xpending(keys.INGEST_STREAM, keys.INGEST_GROUP)
    pipe.hlen(keys.DLQ)
    pipe.zcard(keys.FOLLOWUPS_DUE)
    pipe.zrange(keys.FOLLOWUPS_DUE, 0, 0, withscores=True)
    pipe.zcount(keys.FOLLOWUPS_DUE, "-inf", now)
    pipe.hgetall(keys.WORKER_HEARTBEATS)
    for key in stats.last_hour_keys(now):
        pipe.hgetall(key)
    res = pipe.execute(raise_on_error=False)
    stream, pending_info, dlq, fu_pending, fu_next, fu_overdue, beats = res[:7]
    if isinstance(pending_info, redis.ResponseError):  # NOGROUP: no worker ever started
        pending = 0
    elif isinstance(pending_info, Exception):
        raise pending_info
    else:
        pending = int(pending_info.get("pending", 0)) if isinstance(pending_info, dict) else 0
    for item in (stream, dlq, fu_pending, fu_next, fu_overdue, beats, *res[7:]):
        if isinstance(item, Exception):
            raise item
    due = deliveries.due_counts(r, now, deliveries.OVERDUE_AFTER)
    stale_after = rt.config.server.worker_stale_after
    ages = stats.heartbeat_ages(beats, now)
    alive = sorted((name for name, age in ages.items() if age <= stale_after), key=lambda n: ages[n])
    events = stats.sum_types(res[7:])
    next_due = None
    if fu_next:
        fid, score = fu_next[0]
        next_due = {"id": fid.decode() if isinstance(fid, bytes) else fid, "due": _iso(score),
                    "in_seconds": round(score - now, 1)}
    return {
        "at": _iso(now),
        "redis": mask_url(rt.config.server.queue_redis_url),
        "pieces": pieces_store(rt),
        "ingest": {"stream": int(stream), "pending": pending},
        "deliveries": {"queued": due["ready"], "scheduled": due["scheduled"], "overdue": due["overdue"],
                       "oldest_overdue_s": due["oldest_overdue_s"]},
        "queue_depth": int(stream) + due["ready"],
        "workers": {"alive": len(alive), "registered": len(ages), "stale_after": stale_after,
                    "newest_heartbeat_age": round(min(ages.values()), 1) if ages else None,
                    "alive_names": alive},
        "dlq": int(dlq),
        "followups": {"pending": int(fu_pending), "overdue": int(fu_overdue), "next": next_due},
        "events_last_hour": {"total": sum(events.values()), "by_type": events},
        "destinations": destinations.report(rt.redis, rt.config, now),
    }


def render(s: dict[str, Any]) -> str:
    """The one-screen text form of `gather`'s result."""
    w = s["workers"]
    if not w["registered"]:
        workers = "0 alive (no worker ever registered a heartbeat)"
    else:
        stale = w["registered"] - w["alive"]
        workers = (f"{w['alive']} alive" + (f", {stale} stale" if stale else "")
                   + f" (newest heartbeat {_ago(w['newest_heartbeat_age'])} ago; stale after {w['stale_after']:g} s)")
    fu = s["followups"]
    followups = f"{fu['pending']} pending"
    if fu["next"]:
        left = fu["next"]["in_seconds"]
        when = f"in {_ago(left)}" if left >= 0 else f"{_ago(left)} overdue"
        followups += f", next due {fu['next']['due']} ({when})"
    followups += f", {fu['overdue']} overdue"
    ev = s["events_last_hour"]
    by_type = ", ".join(f"{t} {n}" for t, n in ev["by_type"].items()) or "none"
    lines = [
        f"postrelay status at {s['at']}  (redis {s['redis']})",
        "",
        f"  ingest stream      {s['ingest']['stream']} entries ({s['ingest']['pending']} read, not yet acknowledged)",
        f"  delivery queue     {s['deliveries']['queued']} ready, {s['deliveries']['scheduled']} scheduled "
        f"(retries and delayed), {s['deliveries']['overdue']} overdue"
        + (f" (oldest {_ago(s['deliveries']['oldest_overdue_s'])} late: are workers running?)"
           if s["deliveries"]["overdue"] else ""),
        f"  queue depth        {s['queue_depth']}",
        f"  workers            {workers}",
        f"  dead letters       {s['dlq']}" + ("  (postrelay dlq list)" if s["dlq"] else ""),
        f"  follow-ups         {followups}",
        f"  events, last hour  {ev['total']}: {by_type}",
        "",
    ]
    if s.get("pieces"):
        lines[-1:-1] = [f"  mailpieces         {_pieces_line(s['pieces'])}"]
    if s["destinations"]:
        lines.append(f"  {'destination':<18}{'type':<12}{'circuit':<11}{'paused':<8}{'backlog':>8}{'dead':>6}  last error")
        for row in s["destinations"]:
            lines.append(f"  {row['name']:<18}{row['type']:<12}{row['state']:<11}{'yes' if row['paused'] else 'no':<8}"
                         f"{row['backlog']:>8}{row['dead']:>6}  {(row['last_error'] or '')[:60]}".rstrip())
    else:
        lines.append("  no destinations configured")
    return "\n".join(lines)


def _pieces_line(p: dict[str, Any]) -> str:
    """`redis+cluster://… (Redis Cluster): 3 primaries, 120 keys (127.0.0.1:7000 40, …)`."""
    if not p["cluster"]:
        return f"{p['redis']}: {p['keys']} keys"
    nodes = p["nodes"]
    per_node = ", ".join(f"{n['node']} {n['keys']}" for n in nodes)
    return (f"{p['redis']} (Redis Cluster): {len(nodes)} primaries, {sum(n['keys'] for n in nodes)} keys "
            f"({per_node})")
