"""Per-destination rate limits (`rate_limit = "30/s"`), GCRA in Redis so every worker shares one budget."""

from __future__ import annotations

import math
import re

from redis import Redis

_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local allow_at = tat - burst
if now < allow_at then return tostring(allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return '0'
"""
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
        self._script = redis.register_script(_GCRA)

    def wait(self, dest: str, rate_per_second: float, now: float, burst: int = 1) -> float:
        """Take one slot if available now; else the seconds until one is (the slot is not taken)."""
        interval_ms = 1000.0 / rate_per_second
        result = self._script(keys=[f"pr:rl:{{{dest}}}"],
                              args=[math.floor(now * 1000), interval_ms, interval_ms * max(0, burst - 1)])
        return float(result) / 1000.0
