"""The request path's one Redis round trip: dedupe and enqueue atomically, coalesced across requests.

A Lua script (`postrelay/core/lua/ingest_enqueue.lua`), per canonical event, checks the dedupe marker and, only if
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
import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.scripts import lua

MAX_BATCH_EVENTS = 500

Marker = tuple[str, int]
"""(marker id, TTL seconds): what makes an event a duplicate, when it is not its own id within the window."""
_Waiter = tuple[Sequence[CanonicalEvent], Sequence[Marker] | None, "asyncio.Future[tuple[int, int]]"]


_Read = tuple[str, "asyncio.Future[bytes | None]"]
# (event, marker, link record key, now, future of (flag, record))
_Visit = tuple[Any, Marker, str, float, "asyncio.Future[tuple[str, bytes | None]]"]


class IngestQueue:
    """Durable, idempotent hand-off from the receiver to the workers.

    `get` lets the request path read a key (a tracking link's record) in the same coalesced round trip, and
    `enqueue_visit` queues a tracking-link visit only if its link is active (`postrelay/core/lua/ingest_visit.lua`,
    the same per-event step as webhooks' events): the reads, visits and events waiting when a round trip goes out
    travel in one pipeline.
    """

    def __init__(self, redis: Redis, dedupe_window: float, link_hosts: Sequence[str] = ()) -> None:
        self.redis = redis
        self.ttl = max(1, int(dedupe_window))
        self.link_hosts = json.dumps(list(link_hosts))
        self._lua = lua("ingest_enqueue")
        self._script = self._lua.register(redis)
        self._visit_lua = lua("ingest_visit")
        self._visit_script = self._visit_lua.register(redis)
        self._stream = [keys.INGEST_STREAM]
        self._pending: list[_Waiter] = []
        self._reads: list[_Read] = []
        self._visits: list[_Visit] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    async def enqueue(self, events: Sequence[CanonicalEvent],
                      markers: Sequence[Marker] | None = None) -> tuple[int, int]:
        """Queue events not seen within the dedupe window; returns (accepted, duplicates).

        An event is a `CanonicalEvent`, or anything with its `id` and `model_dump_json()` (a tracking-link visit
        is serialized without a model: `postrelay.core.stores.links.VisitJSON`).
        `markers` (one per event) replace the dedupe marker (the event id, for the dedupe window) by another id
        and TTL: tracking-link visits collapse one client's repeats within `[links] collapse_window` this way.
        Raises the Redis error when the store is unreachable: then nothing of this request was marked seen.
        """
        if not events:
            return 0, 0
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, markers, future))
        self._start()
        return await future

    async def get(self, key: str) -> bytes | None:
        """GET `key`, in the next round trip (shared with queued events and other reads)."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._reads.append((key, future))
        self._start()
        return await future

    async def enqueue_visit(self, event: Any, marker: Marker, link_key: str, now: float) -> tuple[str, bytes | None]:
        """Queue one visit if the link whose record is at `link_key` exists and is active at `now` (not revoked,
        not expired, its target on `link_hosts`); (flag, the record or None): flag `1` queued, `0` collapsed
        (its marker exists), `x` no such link, `g` gone. Raises the Redis error like `enqueue`."""
        future: asyncio.Future[tuple[str, bytes | None]] = asyncio.get_running_loop().create_future()
        self._visits.append((event, marker, link_key, now, future))
        self._start()
        return await future

    def _start(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._task = asyncio.get_running_loop().create_task(self._flush_all())

    async def _flush_all(self) -> None:
        try:
            while self._pending or self._reads or self._visits:
                batch: list[_Waiter] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_BATCH_EVENTS):
                    waiter = self._pending.pop(0)
                    batch.append(waiter)
                    size += len(waiter[0])
                reads, self._reads = self._reads[:MAX_BATCH_EVENTS], self._reads[MAX_BATCH_EVENTS:]
                visits, self._visits = self._visits[:MAX_BATCH_EVENTS], self._visits[MAX_BATCH_EVENTS:]
                await self._flush(batch, reads, visits)
        finally:
            self._flushing = False

    def _call(self, batch: list[_Waiter]) -> tuple[list[str], list[object]]:
        """KEYS and ARGV of the script for `batch`."""
        events = [e for evs, _, _ in batch for e in evs]
        args: list[object] = [self.ttl, *(e.model_dump_json() for e in events)]
        if any(markers for _, markers, _ in batch):
            ids = [m for evs, markers, _ in batch for m in (markers or [(e.id, self.ttl) for e in evs])]
            args.extend(ttl for _, ttl in ids)
            marker_keys = [keys.seen(mid) for mid, _ in ids]
        else:
            marker_keys = [keys.seen(e.id) for e in events]
        return [keys.INGEST_STREAM, *marker_keys], args

    def _visit_call(self, visits: list[_Visit]) -> list[object]:
        """ARGV of `ingest_visit.lua` for `visits` (KEYS: the stream): every visit on one line of one string."""
        seen = keys.seen
        lines = "\n".join(f"{link_key}\t{seen(marker)}\t{ttl}\t{event.model_dump_json()}"
                          for event, (marker, ttl), link_key, _, _ in visits)
        return [repr(visits[0][3]), self.link_hosts, lines]

    async def _round_trip(self, batch: list[_Waiter], reads: list[_Read],
                          visits: list[_Visit]) -> tuple[Any, list[Any], Any]:
        """(script reply or None, read replies, visits' reply or None): one script call when the round trip
        carries only events (webhooks) or only visits (tracking links), else one pipeline with everything."""
        call = self._call(batch) if batch else None
        visit_args = self._visit_call(visits) if visits else None
        if not reads and (call is None or visit_args is None):
            if call is not None:
                return await self._script(keys=call[0], args=call[1]), [], None
            return None, [], await self._visit_script(keys=self._stream, args=visit_args)
        scripts: list[tuple[Any, tuple[list[str], list[object]]]] = []
        if call is not None:
            scripts.append((self._lua, call))
        if visit_args is not None:
            scripts.append((self._visit_lua, (self._stream, visit_args)))
        pipe = self.redis.pipeline(transaction=False)
        for key, _ in reads:
            pipe.get(key)
        for script, (k, a) in scripts:
            pipe.execute_command("EVALSHA", script.sha, len(k), *k, *a)
        replies = await pipe.execute(raise_on_error=False)
        values = replies[:len(reads)]
        for value in values:
            if isinstance(value, Exception):
                raise value
        answers = []
        for (script, (k, a)), answer in zip(scripts, replies[len(reads):], strict=True):
            if isinstance(answer, NoScriptError):  # a restarted Redis forgot it: load it and run it again
                answer = await script.register(self.redis)(keys=k, args=a)
            elif isinstance(answer, Exception):
                raise answer
            answers.append(answer)
        flags = answers.pop(0) if call is not None else None
        return flags, values, answers[0] if visits else None

    async def _flush(self, batch: list[_Waiter], reads: list[_Read], visits: list[_Visit]) -> None:
        try:
            flags, values, visited = await self._round_trip(batch, reads, visits)
        except BaseException as exc:  # every waiter gets the error (503 to the provider, which retries)
            for future in [f for _, _, f in batch] + [f for _, f in reads] + [v[4] for v in visits]:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, read), value in zip(reads, values, strict=True):
            if not read.done():
                read.set_result(value)
        if visits:
            lines = visited.split(b"\n") if isinstance(visited, bytes) else str(visited).encode().split(b"\n")
            for visit, line in zip(visits, lines, strict=True):
                if not visit[4].done():  # b"<flag>\t<record JSON, or nothing>"
                    visit[4].set_result((chr(line[0]), line[2:] or None))
        if not batch:
            return
        flags = flags.decode() if isinstance(flags, bytes) else str(flags)
        pos = 0
        for evs, _, future in batch:
            mine = flags[pos:pos + len(evs)]
            pos += len(evs)
            if not future.done():
                accepted = mine.count("1")
                future.set_result((accepted, len(evs) - accepted))
