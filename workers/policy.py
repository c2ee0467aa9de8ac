"""Retry policy: exponential backoff with full jitter, honouring Retry-After, capped by attempts and age."""

from __future__ import annotations

import random
from dataclasses import dataclass

from postrelay.core.backoff import jittered
from postrelay.core.config import DeliveryConfig as RetrySettings


@dataclass(frozen=True)
class Decision:
    """Retry after `delay` seconds, or give up (`dead`) with a reason."""

    dead: bool
    delay: float = 0.0
    reason: str = ""


def next_attempt(settings: RetrySettings, attempts: int, age: float, retry_after: float | None,
                 rng: random.Random | None = None) -> Decision:
    """Decide what follows a transient failure after `attempts` attempts over `age` seconds.

    The delay is never shorter than `retry_after` (fractions kept).
    """
    if attempts >= settings.max_attempts:
        return Decision(True, reason=f"gave up after {attempts} attempts")
    delay = jittered(attempts, settings.base_delay, settings.max_delay, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if age + delay > settings.max_age:
        return Decision(True, reason=f"gave up after {attempts} attempts over {int(age)} s (max_age {int(settings.max_age)} s)")
    return Decision(False, delay=delay)
