"""Telling repeat visitors apart without storing who they are: a keyed hash (BLAKE2b) under a rotating random key.

The key of each rotation period (`[links] visitor_key_rotation`) is random, made by the first receiver that
needs it and shared through Redis (`SET NX`, expiring two periods later), so every process collapses the same
client alike and, once a key has expired, nobody can link a hash to an address again. Each process keeps the
current key in memory: one Redis round trip per period. When Redis cannot be reached the process uses a key
of its own for the period (repeats then collapse per process only) and asks Redis again after a few seconds.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from postrelay.core import keys

RETRY_AFTER = 5.0


class VisitorKeys:
    """The rotating visitor key and the visitor hash."""

    def __init__(self, redis: Any, rotation: float) -> None:
        self.redis = redis
        self.rotation = rotation
        self._period = -1
        self._key = b""
        self._local_until = 0.0

    def cached(self, now: float) -> bytes | None:
        """The key of the period containing `now` when this process has it (no Redis call), else None."""
        if int(now // self.rotation) == self._period and (not self._local_until or now < self._local_until):
            return self._key
        return None

    async def key(self, now: float) -> bytes:
        """The key of the period containing `now`."""
        period = int(now // self.rotation)
        known = self.cached(now)
        if known is not None:
            return known
        fresh = secrets.token_hex(32)
        try:
            old = await self.redis.set(keys.link_visitor_key(period), fresh, nx=True,
                                       ex=int(2 * self.rotation) + 1, get=True)
        except Exception:
            if period != self._period:  # keep a local key for a few seconds, then ask Redis again
                self._key = secrets.token_bytes(32)
            self._period = period
            self._local_until = now + RETRY_AFTER
            raise
        self._period, self._local_until = period, 0.0
        self._key = (old.decode() if isinstance(old, bytes) else old or fresh).encode()
        return self._key

    async def visitor(self, now: float, address: str, agent: str) -> str:
        """A hex digest standing for (address, User-Agent) in this period."""
        key = self.cached(now)
        if key is None:
            try:
                key = await self.key(now)
            except Exception:
                key = self._key
        return digest(key, address, agent)


def digest(key: bytes, address: str, agent: str) -> str:
    """Keyed BLAKE2b (a MAC: RFC 7693) of address and User-Agent, 128 bits as hex."""
    return hashlib.blake2b(f"{address}\n{agent}".encode(), key=key[:64], digest_size=16).hexdigest()
