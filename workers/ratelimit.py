"""Per-destination rate limits, GCRA in Redis so every worker shares one budget.

Two sources, the slower wins (`ratelimit_gcra.lua`):
- the configured `rate_limit = "30/s"` (also `100/m`, `5/10s`, `1000/h`);
- what the destination's rate-limit headers teach (`Adapter.rate_info`: HubSpot `X-HubSpot-RateLimit-*`,
  Pipedrive `x-ratelimit-*`): `limit` requests per `window` become a pace of `SAFETY` x that rate, and when the
  `remaining` budget falls to `RESERVE` of the limit (other integrations of the same account spend it too),
  every slot is held for a share of the window that grows as the budget shrinks (a whole window at 0; at most
  until the window resets, when the vendor says when). A 429's `Retry-After` holds the destination that long.
  So a shared destination backs off before it answers 429.
Each HTTP call takes one slot (`pace`, called by `Adapter.call`), a batch call as much as a single one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from redis import Redis

from postrelay.adapters.base import RateInfo
from postrelay.core import keys
from postrelay.core.scripts import lua

_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNIT = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
SAFETY = 0.9  # pace at this share of the rate the headers announce
RESERVE = 0.05  # hold when no more than this share of the budget remains (at least 1 request)
LEARNED_TTL_MS = 600_000  # what the headers taught is forgotten after 10 minutes without a fresh answer
PACE_PATIENCE = 60.0  # seconds a call waits for its slot before it gives up (the delivery retries later)


def parse_rate(spec: str) -> float:
    """Requests per second from `30/s`, `100/m`, `5/10s`, `1000/h`; ValueError when unparseable."""
    m = _SPEC.match(spec.lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"rate_limit {spec!r}: use e.g. '30/s', '100/m' or '5/10s'")
    per = (int(m.group(2)) if m.group(2) else 1) * _UNIT[m.group(3)]
    return float(m.group(1)) / per


def slot_keys(dest: str) -> list[str]:
    """The keys of `dest`'s limit (`ratelimit_gcra.lua`'s KEYS; `delivery_prepare.lua` looks at them too)."""
    return [keys.rate_limit(dest), keys.rate_learned(dest)]


def slot_args(rate_per_second: float | None, now: float, burst: int = 1) -> list[float]:
    """now (ms), the configured interval (ms) and the burst allowance (ms), as the scripts take them."""
    interval_ms = 1000.0 / rate_per_second if rate_per_second else 0.0
    return [math.floor(now * 1000), interval_ms, interval_ms * max(0, burst - 1)]


class RateLimiter:
    """Answers "how long must this call wait?" per destination (0 = go now), and learns from headers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def wait(self, dest: str, rate_per_second: float | None, now: float, burst: int = 1, take: bool = True) -> float:
        """Take one slot if available now (only look with `take=False`); else the seconds until one is (the
        slot is not taken). `rate_per_second` is the configured rate (None: only the headers limit `dest`)."""
        result = lua("ratelimit_gcra")(self.redis, keys=slot_keys(dest),
                                       args=[*slot_args(rate_per_second, now, burst), "1" if take else "0"])
        return float(result) / 1000.0

    def pace(self, dest: str, rate_per_second: float | None, clock: Callable[[], float],
             sleep: Callable[[float], None], patience: float = PACE_PATIENCE, take: bool = True,
             near: float = 0.0) -> float | None:
        """Block (sleeping at most a second at a time) until a slot is free now and taken (`take=False`: only
        until one is free, or within `near` seconds); None then, else the wait left when it would end after
        `patience` seconds (nothing is taken)."""
        deadline = clock() + patience
        while True:
            wait = self.wait(dest, rate_per_second, clock(), take=take)
            if wait <= near:
                return None
            if clock() + wait > deadline:
                return wait
            sleep(min(wait - near, 1.0))

    def observe(self, dest: str, info: RateInfo, now: float) -> None:
        """Learn from one answer's rate-limit headers (and a 429's Retry-After)."""
        fields: dict[Any, Any] = {}
        hold = 0.0
        if info.limit and info.window:
            per_request = info.window / info.limit
            fields["interval"] = round(per_request / SAFETY * 1000, 3)
            if info.remaining is not None:
                reserve = max(2, math.ceil(info.limit * RESERVE))
                if info.remaining <= reserve:  # a rolling window refills when old requests age out: unknown when
                    refill = info.window * (reserve + 1 - max(0, info.remaining)) / (reserve + 1)
                    hold = min(refill, info.reset) if info.reset is not None else refill
        if info.retry_after is not None:
            hold = max(hold, info.retry_after)
        pipe = self.redis.pipeline(transaction=False)
        name = keys.rate_learned(dest)
        if hold > 0:
            until = math.ceil((now + hold) * 1000)
            current = self.redis.hget(name, "hold_until")
            if current is None or float(current) < until:
                fields["hold_until"] = until
        if not fields:
            return
        pipe.hset(name, mapping=fields)
        pipe.pexpire(name, LEARNED_TTL_MS)
        pipe.execute()
