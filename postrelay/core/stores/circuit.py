"""Per-destination circuit breaker in Redis, shared by every worker: its state lives here and only here.

closed → (threshold consecutive transient failures) → open for `cooldown` → half-open: one probe
delivery at a time → success closes it, failure re-opens it with a doubled cooldown (capped).
While open, deliveries wait (they are rescheduled, never dropped) and other destinations keep flowing.

The hash `pr:cb:{dest}` holds `state` (closed/open), `failures`, `cooldown`, `open_until`, `last_error`,
`last_failure_at`; `pr:cb:{dest}:probe` marks the half-open probe in flight. Two scripts write it besides
this module: `circuit_fail.lua` (via `failure`) and `delivery_complete.lua`, which closes the circuit in the
same atomic step that stores a success (the fields it writes are those of `success` below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from postrelay.core import keys
from postrelay.core.config import DeliveryConfig
from postrelay.core.replies import text_map
from postrelay.core.scripts import lua

CODES = {"closed": 0, "half_open": 1, "open": 2}  # postrelay_circuit_state


def state_name(state: bytes | str | None, open_until: bytes | str | float | None, now: float) -> str:
    """closed / open / half_open from a breaker hash's `state` and `open_until` (open and cooled down = half_open)."""
    text = state.decode() if isinstance(state, bytes) else (state or "closed")
    if text == "open" and now >= float(open_until or 0):
        return "half_open"
    return text


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

    def gate(self, dest: str, now: float) -> Gate:
        """Closed: go. Open and cooling down: wait. Cooled down: let exactly one probe through."""
        state, open_until = self.redis.hmget(keys.circuit(dest), "state", "open_until")
        if state is None or state == b"closed":
            return Gate(True)
        until = float(open_until or 0)
        if now < until:
            return Gate(False, wait=until - now)
        if self.redis.set(keys.circuit_probe(dest), "1", nx=True, px=int(self.settings.lease * 1000)):
            return Gate(True, probe=True)
        return Gate(False, wait=min(5.0, self.settings.circuit_cooldown))

    def success(self, dest: str) -> None:
        """A delivery succeeded: close the circuit."""
        pipe = self.redis.pipeline()
        pipe.hset(keys.circuit(dest), mapping={"state": "closed", "failures": 0,
                                               "cooldown": self.settings.circuit_cooldown})
        pipe.delete(keys.circuit_probe(dest))
        pipe.execute()

    def failure(self, dest: str, now: float, error: str) -> bool:
        """A transient failure; returns True when this opened (or re-opened) the circuit."""
        s = self.settings
        return bool(lua("circuit_fail")(self.redis, keys=[keys.circuit(dest), keys.circuit_probe(dest)],
                                        args=[now, s.circuit_threshold, s.circuit_cooldown, s.circuit_max_cooldown,
                                              error[:300]]))

    def state(self, dest: str, now: float) -> dict[str, Any]:
        """closed / open / half_open, plus failures, last error and when it may probe again."""
        raw = text_map(self.redis.hgetall(keys.circuit(dest)))
        state = state_name(raw.get("state"), raw.get("open_until"), now)
        until = float(raw.get("open_until", 0) or 0)
        return {"state": state, "failures": int(raw.get("failures", 0) or 0), "last_error": raw.get("last_error"),
                "open_until": until if state != "closed" else None}

    def reset(self, dest: str) -> None:
        """Forget the breaker state (used by `destinations resume`)."""
        self.redis.delete(keys.circuit(dest), keys.circuit_probe(dest))
