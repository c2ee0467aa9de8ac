"""The request path's one Redis round trip: dedupe and enqueue atomically, coalesced across requests.

A Lua script (`postrelay/lua/ingest_enqueue.lua`), per canonical event, checks the dedupe marker and, only if
it is absent, appends the event to the ingest stream and then sets the marker (`SET EX window`). Both happen
or neither does, so a crash, a lost connection or a failing XADD can never leave an event marked seen but not
queued: the provider's retry is then accepted, not dropped. (Redis does not roll back a script that errors
half-way, hence XADD before SET.)

Concurrent requests share round trips: while one script call is in flight, the events of requests that
arrive meanwhile wait in a buffer and go together in the next call (auto-pipelining). Each request still
waits for exactly one round trip that carries its events, and is answered only after that call returned.
Under load this turns hundreds of Redis calls per second into a few dozen larger ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis

from postrelay import keys
from postrelay.events import CanonicalEvent
from postrelay.scripts import lua

MAX_BATCH_EVENTS = 500

_Waiter = tuple[Sequence[CanonicalEvent], "asyncio.Future[tuple[int, int]]"]


class IngestQueue:
    """Durable, idempotent hand-off from the receiver to the workers."""

    def __init__(self, redis: Redis, dedupe_window: float) -> None:
        self.redis = redis
        self.ttl = max(1, int(dedupe_window))
        self._script = lua("ingest_enqueue").register(redis)
        self._pending: list[_Waiter] = []
        self._flushing = False

    async def enqueue(self, events: Sequence[CanonicalEvent]) -> tuple[int, int]:
        """Queue events not seen within the dedupe window; returns (accepted, duplicates).

        Raises the Redis error when the store is unreachable: then nothing of this request was marked seen.
        """
        if not events:
            return 0, 0
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch, size = [], 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_BATCH_EVENTS):
                    waiter = self._pending.pop(0)
                    batch.append(waiter)
                    size += len(waiter[0])
                await self._flush(batch)
        finally:
            self._flushing = False

    async def _flush(self, batch: list[_Waiter]) -> None:
        events = [e for evs, _ in batch for e in evs]
        try:
            flags = await self._script(keys=[keys.INGEST_STREAM, *(keys.seen(e.id) for e in events)],
                                       args=[self.ttl, *(e.model_dump_json() for e in events)])
        except BaseException as exc:  # every waiter gets the error (503 to the provider, which retries)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        flags = flags.decode() if isinstance(flags, bytes) else str(flags)
        pos = 0
        for evs, future in batch:
            mine = flags[pos:pos + len(evs)]
            pos += len(evs)
            if not future.done():
                accepted = mine.count("1")
                future.set_result((accepted, len(evs) - accepted))
