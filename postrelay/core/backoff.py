"""The one backoff mechanism and the one `Retry-After` parser.

- `jittered(attempt, base, ceiling)`: exponential backoff with full jitter (retry policy, backfill);
- `Backoff`: the delay a loop waits after consecutive failures, doubling up to a ceiling, reset by a success
  (the worker's loops while Redis is down, full, loading or read-only);
- `retry_after(value, now)`: seconds from a `Retry-After` header, delta seconds (fractions kept: never retry
  earlier than asked) or an HTTP date.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from datetime import UTC


def jittered(attempt: int, base: float, ceiling: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): uniform in [b/2, b] with b = min(ceiling, base·2^(attempt-1))."""
    backoff = min(ceiling, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(backoff / 2, backoff)


class Backoff:
    """Consecutive-failure delays: `first`, doubling, capped at `ceiling`; `reset()` after a success."""

    def __init__(self, first: float = 0.1, ceiling: float = 5.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self.failures = 0

    def next(self) -> float:
        """Count a failure; the delay to wait before trying again."""
        self.failures += 1
        return min(self.ceiling, self.first * (2 ** min(self.failures - 1, 30)))

    def reset(self) -> None:
        """A success: the next failure waits `first` again."""
        self.failures = 0


def retry_after(value: str | None, now: float | None = None, cap: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta seconds or an HTTP date); None if absent or invalid.

    Fractions are kept (`1.5` waits 1.5 s, never 1); a date in the past gives 0; `cap` bounds the result.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    seconds = max(0.0, seconds)
    return min(seconds, cap) if cap is not None else seconds
