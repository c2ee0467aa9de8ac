"""A delivery's execution lock, renewed by one thread per process while its attempt runs."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import redis

from postrelay.core import keys
from postrelay.core.scripts import lua

log = logging.getLogger("postrelay.delivery")


class _Renewer:
    """One daemon thread per process renewing every held delivery lock every ttl/6 (a thread per attempt
    would cost more than the attempt's Redis work). Renewing is a PEXPIRE, which Redis allows while full."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: dict[int, tuple[redis.Redis, str, str, int, float]] = {}  # id(lock) -> (r, key, token, ttl, due)
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, lock: Lock) -> None:
        with self._cond:
            self._held[id(lock)] = (lock.r, lock.key, lock.token, lock.ttl_ms, time.monotonic() + lock.ttl_ms / 6000.0)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="delivery-locks", daemon=True)
                self._thread.start()

    def remove(self, lock: Lock) -> None:
        with self._cond:
            self._held.pop(id(lock), None)

    def _loop(self) -> None:
        renew = lua("delivery_renew")
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(k, v) for k, v in self._held.items() if v[4] <= now]
                for k, (r, key, token, ttl, _) in due:
                    self._held[k] = (r, key, token, ttl, now + ttl / 6000.0)
                nxt = min((v[4] for v in self._held.values()), default=now + 1.0)
            by_client: dict[int, list[tuple[redis.Redis, str, str, int]]] = {}
            for _, (r, key, token, ttl, _) in due:
                by_client.setdefault(id(r), []).append((r, key, token, ttl))
            for group in by_client.values():
                try:
                    pipe = group[0][0].pipeline(transaction=False)
                    for _, key, token, ttl in group:
                        renew(pipe, keys=[key], args=[token, ttl])
                    pipe.execute()
                except redis.RedisError:
                    continue  # Redis is down: the TTL covers 5/3 lease of outage; try again next round
            time.sleep(max(0.01, min(0.1, nxt - time.monotonic())))


_RENEWER = _Renewer()


class Lock:
    """A delivery's execution lock: held (TTL 2 x lease) and renewed every lease/3 while the attempt runs.

    An attempt may take longer than the lease (slow destination, several calls, a Redis outage while its
    outcome is being stored): renewing keeps a second worker from running it at the same time, while a
    SIGKILLed worker's lock still expires within 2 x lease so another worker can run its delivery.
    """

    def __init__(self, r: redis.Redis, key: str, lease: float) -> None:
        self.r = r
        self.key = keys.delivery_lock(key)
        self.token = uuid.uuid4().hex
        self.ttl_ms = max(1000, int(2 * lease * 1000))
        self.held = False

    def acquire(self) -> bool:
        """Take the lock (False if someone holds it) and start renewing it."""
        if not self.r.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self.adopt()
        return True

    def adopt(self) -> None:
        """The lock was taken with this token (by a script): renew it from now on."""
        self.held = True
        _RENEWER.add(self)

    def released(self) -> None:
        """A script deleted the lock (if still ours): stop renewing."""
        self.held = False
        _RENEWER.remove(self)

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours (it expires on its own otherwise)."""
        if not self.held:
            return
        self.released()
        try:
            lua("delivery_unlock")(self.r, keys=[self.key], args=[self.token])
        except redis.RedisError:
            log.warning("could not release delivery lock %s; it expires on its own", self.key)
