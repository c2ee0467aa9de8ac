"""What counts as "Redis is unavailable" — for every write the worker makes — and writing through it.

Besides a broken connection or a timeout, Redis refuses writes while it is full (`OOM`, with `noeviction` at
`maxmemory`), busy running a script (`BUSY`), loading its data set (`LOADING`), a read-only replica
(`READONLY`) or unable to persist (`MISCONF`): each passes once Redis recovers, so callers wait and retry
instead of treating it as a failure of the work they were storing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from postrelay.core.backoff import Backoff

log = logging.getLogger("postrelay.redis")
T = TypeVar("T")
_CODES = ("OOM", "BUSY", "LOADING", "READONLY", "MISCONF", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN")
_CLASSES = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
            redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError, redis.exceptions.MasterDownError,
            redis.exceptions.TryAgainError)


def is_outage(exc: BaseException) -> bool:
    """True for an error that means "Redis cannot take this write now", not "this write is wrong"."""
    if isinstance(exc, _CLASSES):
        return True
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        # redis-py strips the error code for the classes above; in a script error or an aborted
        # transaction it stays in the message ("... OOM command not allowed ...")
        return any(text.startswith(code) or f" {code} " in f" {text} " or f"-{code}" in text for code in _CODES) \
            or "command not allowed when used memory" in text
    return False


def write_through(write: Callable[[], T], what: str, deadline: float, backoff: Backoff | None = None,
                  sleep: Callable[[float], None] = time.sleep, still: Callable[[], bool] = lambda: True) -> T:
    """Run `write` (which builds its own pipeline each time), retrying Redis outages until `deadline`
    (monotonic seconds) or until `still()` turns False; then the last outage error is raised."""
    backoff = backoff or Backoff(0.05, 2.0)
    logged = False
    while True:
        try:
            result = write()
        except redis.RedisError as exc:
            if not is_outage(exc):
                raise
            delay = backoff.next()
            if time.monotonic() + delay > deadline or not still():
                raise
            if not logged:
                log.warning("Redis unavailable while storing %s (%s: %s); retrying", what, type(exc).__name__,
                            str(exc)[:80])
                logged = True
            sleep(delay)
            continue
        if logged:
            log.info("stored %s after the outage", what)
        return result
