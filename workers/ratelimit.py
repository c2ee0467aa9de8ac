"""Per-destination rate limits (`rate_limit = "30/s"`), GCRA in Redis so every worker shares one budget."""

from __future__ import annotations

import math
import re

from redis import Redis

from postrelay.core import keys
from postrelay.core.scripts import lua

_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNIT = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(spec: str) -> float:
    """Requests per second from `30/s`, `100/m`, `5/10s`, `1000/h`; ValueError when unparseable."""
    m = _SPEC.match(spec.lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"rate_limit {spec!r}: use e.g. '30/s', '100/m' or '5/10s'")
    per = (int(m.group(2)) if m.group(2) else 1) * _UNIT[m.group(3)]
    return float(m.group(1)) / per


class RateLimiter:
    """Answers "how long must this delivery wait?" per destination (0 = go now)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def wait(self, dest: str, rate_per_second: float, now: float, burst: int = 1) -> float:
        """Take one slot if available now; else the seconds until one is (the slot is not taken)."""
        interval_ms = 1000.0 / rate_per_second
        result = lua("ratelimit_gcra")(self.redis, keys=[keys.rate_limit(dest)],
                                       args=[math.floor(now * 1000), interval_ms, interval_ms * max(0, burst - 1)])
        return float(result) / 1000.0
