"""Counters and histograms that worker processes keep in Redis, read by `/metrics` and `postrelay status`.

Workers run on any number of hosts and serve no HTTP, so what they count lives in Redis, written in the
pipelines or transactions they execute anyway (no extra round trip):
- `pr:stats` (hash): `deliveries|<destination>|<outcome>` per delivery attempt (`ok`, `retry`, `permanent`,
  `dead`) and `events|<type>` per event the dispatcher processed;
- `pr:stats:hist:<name>` (hash): a histogram: one field per bucket upper bound holding the observations that
  fell in that bucket (not cumulative), plus `sum` and `count`;
- `pr:stats:types:<minute>` (hash): events processed per canonical type during that minute (epoch // 60),
  expiring after two hours (`postrelay status`: events in the last hour);
- `pr:stats:sources:<minute>` (hash): the same per source, kept `SOURCES_TTL` (the console's chart).
Counters only grow; Prometheus' `rate()` copes with the reset when Redis data is lost.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.replies import text

STATS = keys.STATS
HIST_PREFIX = keys.STATS_HIST_PREFIX
TYPES_PREFIX = keys.STATS_TYPES_PREFIX
TYPES_TTL = 2 * 3600
SOURCES_TTL = 7 * 3600
OUTCOMES = ("ok", "retry", "permanent", "dead")

# name -> bucket upper bounds (seconds). Exposed as postrelay_<metric> by the receiver's /metrics.
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    # event received_at -> delivered to a destination (relay deliveries, not follow-up actions)
    "end_to_end": (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    # follow-up due time -> fired
    "followup_lag": (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
}


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else f"{value:g}"


def hist_key(name: str) -> str:
    """Hash holding histogram `name`."""
    return keys.stats_hist(name)


def minute_key(epoch: float) -> str:
    """Per-type event counts of the minute containing `epoch`."""
    return keys.stats_minute(int(epoch // 60))


def count_delivery(pipe: Any, destination: str, outcome: str) -> None:
    """Add `deliveries|destination|outcome += 1` to `pipe`."""
    pipe.hincrby(STATS, f"deliveries|{destination}|{outcome}", 1)


def observe(pipe: Any, name: str, value: float) -> None:
    """Add one observation of histogram `name` to `pipe` (negative values count as 0)."""
    value = max(0.0, float(value))
    bucket = next((b for b in HISTOGRAMS[name] if value <= b), math.inf)
    key = hist_key(name)
    pipe.hincrby(key, _bound(bucket), 1)
    pipe.hincrbyfloat(key, "sum", value)
    pipe.hincrby(key, "count", 1)


def count_events(pipe: Any, events: Sequence[CanonicalEvent], now: float) -> None:
    """Add per-type counts of processed `events` (cumulative and for the current minute) to `pipe`."""
    if not events:
        return
    by_type = Counter(e.type.value for e in events)
    minute = minute_key(now)
    for etype, n in by_type.items():
        pipe.hincrby(STATS, f"events|{etype}", n)
        pipe.hincrby(minute, etype, n)
    pipe.expire(minute, TYPES_TTL)
    by_source = Counter(e.source for e in events)
    source_minute = keys.stats_sources_minute(int(now // 60))
    for source, n in by_source.items():
        pipe.hincrby(source_minute, source, n)
    pipe.expire(source_minute, SOURCES_TTL)



def parse_stats(raw: Mapping[Any, Any]) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """(deliveries by (destination, outcome), events processed by type) from the `pr:stats` hash."""
    deliveries: dict[tuple[str, str], int] = {}
    events: dict[str, int] = {}
    for k, v in raw.items():
        parts = text(k).split("|")
        if parts[0] == "deliveries" and len(parts) == 3:
            deliveries[(parts[1], parts[2])] = int(v)
        elif parts[0] == "events" and len(parts) == 2:
            events[parts[1]] = int(v)
    return deliveries, events


def parse_histogram(name: str, raw: Mapping[Any, Any]) -> tuple[list[tuple[float, int]], float, int]:
    """(cumulative buckets [(upper bound, count)] ending with +inf, sum, count) of histogram `name`."""
    fields = {text(k): text(v) for k, v in raw.items()}
    buckets, running = [], 0
    for bound in (*HISTOGRAMS[name], math.inf):
        running += int(fields.get(_bound(bound), 0))
        buckets.append((float(bound), running))
    return buckets, float(fields.get("sum", 0.0)), int(fields.get("count", 0))


def last_hour_keys(now: float, minutes: int = 60) -> list[str]:
    """The per-minute keys of the last `minutes` minutes, the current one included."""
    current = int(now // 60)
    return [keys.stats_minute(m) for m in range(current - minutes + 1, current + 1)]


def source_minute_keys(now: float, minutes: int) -> list[tuple[int, str]]:
    """(minute, key) of the per-source counts of the last `minutes` minutes, oldest first."""
    current = int(now // 60)
    return [(m, keys.stats_sources_minute(m)) for m in range(current - minutes + 1, current + 1)]


def sum_types(hashes: Iterable[Mapping[Any, Any]]) -> dict[str, int]:
    """Per-type totals over several per-minute hashes, largest first."""
    total: Counter[str] = Counter()
    for raw in hashes:
        for k, v in raw.items():
            total[text(k)] += int(v)
    return dict(total.most_common())


def heartbeat_ages(raw: Mapping[Any, Any], now: float) -> dict[str, float]:
    """Seconds since each worker's last heartbeat (from the `pr:workers` hash)."""
    out = {}
    for k, v in raw.items():
        try:
            out[text(k)] = max(0.0, now - float(v))
        except ValueError:
            continue
    return out
