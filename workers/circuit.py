"""Per-destination circuit breaker in Redis, shared by every worker.

closed → (threshold consecutive transient failures) → open for `cooldown` → half-open: one probe
delivery at a time → success closes it, failure re-opens it with a doubled cooldown (capped).
While open, deliveries wait (they are rescheduled, never dropped) and other destinations keep flowing.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from postrelay import keys
from postrelay.config import DeliveryConfig

_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown') or ARGV[3])
redis.call('HSET', KEYS[1], 'last_error', ARGV[5], 'last_failure_at', ARGV[1])
if state == 'open' then
  cooldown = math.min(tonumber(ARGV[4]), cooldown * 2)
elseif failures >= tonumber(ARGV[2]) then
  cooldown = tonumber(ARGV[3])
else
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'open', 'cooldown', cooldown, 'open_until', tonumber(ARGV[1]) + cooldown)
redis.call('DEL', KEYS[2])
return 1
"""


def _key(dest: str) -> str:
    return keys.circuit(dest)


def _probe_key(dest: str) -> str:
    return f"pr:cb:{{{dest}}}:probe"


@dataclass
class Gate:
    """Whether a delivery may go now; if not, how long to wait."""

    allowed: bool
    wait: float = 0.0
    probe: bool = False


class CircuitBreaker:
    """Reads and updates each destination's breaker state."""

    def __init__(self, redis: Redis, settings: DeliveryConfig) -> None:
        self.redis = redis
        self.settings = settings
        self._fail = redis.register_script(_FAIL)

    def gate(self, dest: str, now: float) -> Gate:
        """Closed: go. Open and cooling down: wait. Cooled down: let exactly one probe through."""
        state, open_until = self.redis.hmget(_key(dest), "state", "open_until")
        if state is None or state == b"closed":
            return Gate(True)
        until = float(open_until or 0)
        if now < until:
            return Gate(False, wait=until - now)
        if self.redis.set(_probe_key(dest), "1", nx=True, px=int(self.settings.lease * 1000)):
            return Gate(True, probe=True)
        return Gate(False, wait=min(5.0, self.settings.circuit_cooldown))

    def success(self, dest: str) -> None:
        """A delivery succeeded: close the circuit."""
        pipe = self.redis.pipeline()
        pipe.hset(_key(dest), mapping={"state": "closed", "failures": 0, "cooldown": self.settings.circuit_cooldown})
        pipe.delete(_probe_key(dest))
        pipe.execute()

    def failure(self, dest: str, now: float, error: str) -> bool:
        """A transient failure; returns True when this opened (or re-opened) the circuit."""
        s = self.settings
        return bool(self._fail(keys=[_key(dest), _probe_key(dest)],
                               args=[now, s.circuit_threshold, s.circuit_cooldown, s.circuit_max_cooldown, error[:300]]))

    def state(self, dest: str, now: float) -> dict[str, str | float | int | None]:
        """closed / open / half_open, plus failures, last error and when it may probe again."""
        raw = {k.decode(): v.decode() for k, v in self.redis.hgetall(_key(dest)).items()}
        state = raw.get("state", "closed")
        until = float(raw.get("open_until", 0) or 0)
        if state == "open" and now >= until:
            state = "half_open"
        return {"state": state, "failures": int(raw.get("failures", 0) or 0), "last_error": raw.get("last_error"),
                "open_until": until if state != "closed" else None}

    def reset(self, dest: str) -> None:
        """Forget the breaker state (used by `destinations resume`)."""
        self.redis.delete(_key(dest), _probe_key(dest))
