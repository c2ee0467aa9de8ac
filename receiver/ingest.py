"""The request path's one Redis round trip: dedupe and enqueue atomically, coalesced across requests.

A Lua script (`postrelay/core/lua/ingest_enqueue.lua`), per canonical event, checks the dedupe marker and, only if
it is absent, appends the event to the ingest stream and then sets the marker (`SET EX window`). Both happen
or neither does, so a crash, a lost connection or a failing XADD can never leave an event marked seen but not
queued: the provider's retry is then accepted, not dropped. (Redis does not roll back a script that errors
half-way, hence XADD before SET.)

Concurrent requests share round trips: while one script call is in flight, the events of requests that
arrive meanwhile wait in a buffer and go together in the next call (auto-pipelining). Each request still
waits for exactly one round trip that carries its events, and is answered only after that call returned.
Under load this turns hundreds of Redis calls per second into a few dozen larger ones. A round trip goes out at
the end of the event-loop turn in which its first request asked (`call_soon`), so the requests that turn ran
share it even when nothing is in flight.

The round trips use a dedicated connection (`receiver.redislane`: packed commands written to the socket,
replies parsed by hiredis and handed to a callback, no task per flush): redis-py's asyncio call path cost
more CPU per round trip than a whole tracking-link visit otherwise does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError, NoScriptError

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.scripts import Lua, lua
from postrelay.receiver.redislane import RedisLane, Replies, pack

MAX_BATCH_EVENTS = 500
MAX_IN_FLIGHT = 2  # round trips out at once; what arrives meanwhile waits and goes together in the next one

Marker = tuple[str, int]
"""(marker id, TTL seconds): what makes an event a duplicate, when it is not its own id within the window."""
_Waiter = tuple[Sequence[CanonicalEvent], Sequence[Marker] | None, "asyncio.Future[tuple[int, int]]"]
_Read = tuple[str, "asyncio.Future[bytes | None]"]
# (event, marker, link record key, now, future of (flag, record))
_Visit = tuple[Any, Marker, str, float, "asyncio.Future[tuple[str, bytes | None]]"]
_Script = tuple[Lua, tuple[Any, ...]]  # (script, its numkeys, KEYS and ARGV)


class IngestQueue:
    """Durable, idempotent hand-off from the receiver to the workers.

    `get` lets the request path read a key (a tracking link's record) in the same coalesced round trip, and
    `enqueue_visit` queues a tracking-link visit only if its link is active (`postrelay/core/lua/ingest_visit.lua`,
    the same per-event step as webhooks' events): the reads, visits and events waiting when a round trip goes out
    travel in one pipeline. `close()` closes its connection (the app's shutdown).
    """

    def __init__(self, redis: Redis, dedupe_window: float, link_hosts: Sequence[str] = ()) -> None:
        self.redis = redis
        self.ttl = max(1, int(dedupe_window))
        self.link_hosts = json.dumps(list(link_hosts))
        self._lua = lua("ingest_enqueue")
        self._visit_lua = lua("ingest_visit")
        self._lane = RedisLane(redis)
        self._pending: list[_Waiter] = []
        self._reads: list[_Read] = []
        self._visits: list[_Visit] = []
        self._scheduled = False
        self._in_flight = 0
        self._closed = False

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
        self._wake()
        return await future

    async def get(self, key: str) -> bytes | None:
        """GET `key`, in the next round trip (shared with queued events and other reads)."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._reads.append((key, future))
        self._wake()
        return await future

    async def enqueue_visit(self, event: Any, marker: Marker, link_key: str, now: float) -> tuple[str, bytes | None]:
        """Queue one visit if the link whose record is at `link_key` exists and is active at `now` (not revoked,
        not expired, its target on `link_hosts`); (flag, the record or None): flag `1` queued, `0` collapsed
        (its marker exists), `x` no such link, `g` gone. Raises the Redis error like `enqueue`."""
        future: asyncio.Future[tuple[str, bytes | None]] = asyncio.get_running_loop().create_future()
        self._visits.append((event, marker, link_key, now, future))
        self._wake()
        return await future

    def close(self) -> None:
        """Close the queue's Redis connection (anything still in flight fails with ConnectionError)."""
        self._closed = True
        self._lane.close()

    def _wake(self) -> None:
        if not self._scheduled and self._in_flight < MAX_IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        """Send what waits (up to MAX_BATCH_EVENTS of each kind) in one round trip."""
        self._scheduled = False
        if self._in_flight >= MAX_IN_FLIGHT or not (self._pending or self._reads or self._visits):
            return
        batch: list[_Waiter] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_BATCH_EVENTS):
            waiter = self._pending.pop(0)
            batch.append(waiter)
            size += len(waiter[0])
        reads, self._reads = self._reads[:MAX_BATCH_EVENTS], self._reads[MAX_BATCH_EVENTS:]
        visits, self._visits = self._visits[:MAX_BATCH_EVENTS], self._visits[MAX_BATCH_EVENTS:]
        self._in_flight += 1
        if self._lane.ready:
            self._transmit(batch, reads, visits, retried=False)
        else:
            asyncio.get_running_loop().create_task(self._connect_and_send(batch, reads, visits, retried=False))
        self._wake()

    async def _connect_and_send(self, batch: list[_Waiter], reads: list[_Read], visits: list[_Visit],
                                retried: bool) -> None:
        try:
            await self._lane.connect()
        except BaseException as exc:  # every waiter gets the error (503 to the provider, which retries)
            self._in_flight -= 1
            _fail(batch, reads, visits, exc)
            self._wake()
            if not isinstance(exc, Exception):
                raise
            return
        self._transmit(batch, reads, visits, retried)

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

    def _visit_args(self, visits: list[_Visit]) -> tuple[Any, ...]:
        """numkeys, KEYS and ARGV of `ingest_visit.lua` for `visits` (KEYS: the stream): every visit on one line
        of one string."""
        seen = keys.seen
        lines = "\n".join(f"{link_key}\t{seen(marker)}\t{ttl}\t{event.model_dump_json()}"
                          for event, (marker, ttl), link_key, _, _ in visits)
        return 1, keys.INGEST_STREAM, visits[0][3], self.link_hosts, lines

    def _transmit(self, batch: list[_Waiter], reads: list[_Read], visits: list[_Visit], retried: bool) -> None:
        """Write the round trip: the reads' GETs, then the events' script, then the visits' script."""
        try:
            parts = [pack(b"GET", key) for key, _ in reads]
            scripts: list[_Script] = []
            if batch:
                k, a = self._call(batch)
                scripts.append((self._lua, (len(k), *k, *a)))
            if visits:
                scripts.append((self._visit_lua, self._visit_args(visits)))
            parts += [pack(b"EVALSHA", script.sha, *args) for script, args in scripts]
        except BaseException as exc:
            self._in_flight -= 1
            _fail(batch, reads, visits, exc)
            raise
        self._lane.send(b"".join(parts), len(parts), partial(self._replied, batch, reads, visits, scripts, retried))

    def _replied(self, batch: list[_Waiter], reads: list[_Read], visits: list[_Visit], scripts: list[_Script],
                 retried: bool, replies: Replies) -> None:
        if isinstance(replies, ConnectionError) and not retried and not self._closed:  # lost in flight: once more
            asyncio.get_running_loop().create_task(self._connect_and_send(batch, reads, visits, retried=True))
            return
        self._in_flight -= 1
        self._wake()
        if isinstance(replies, BaseException):
            _fail(batch, reads, visits, replies)
            return
        answers = replies[len(reads):]
        missing = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if missing and self._lane.ready:  # a restarted Redis forgot a script: EVAL loads it and runs the call
            payload = b"".join(pack(b"EVAL", scripts[i][0].source, *scripts[i][1]) for i in missing)
            self._lane.send(payload, len(missing), partial(self._reloaded, batch, reads, visits, replies, missing))
            return
        self._deliver(batch, reads, visits, replies)

    def _reloaded(self, batch: list[_Waiter], reads: list[_Read], visits: list[_Visit], replies: list[Any],
                  missing: list[int], again: Replies) -> None:
        if isinstance(again, BaseException):
            _fail(batch, reads, visits, again)
            return
        for i, answer in zip(missing, again, strict=True):
            replies[len(reads) + i] = answer
        self._deliver(batch, reads, visits, replies)

    def _deliver(self, batch: list[_Waiter], reads: list[_Read], visits: list[_Visit], replies: list[Any]) -> None:
        """Each waiter's answer from the round trip's replies (an error reply fails the waiters it answers)."""
        for (_, read), value in zip(reads, replies, strict=False):
            if not read.done():
                read.set_exception(value) if isinstance(value, Exception) else read.set_result(value)
        answers = replies[len(reads):]
        flags = answers.pop(0) if batch else None
        if visits:
            visited = answers[0]
            if isinstance(visited, Exception):
                _fail([], [], visits, visited)
            else:
                for visit, line in zip(visits, visited.split(b"\n"), strict=True):
                    if not visit[4].done():  # b"<flag>\t<record JSON, or nothing>"
                        visit[4].set_result((chr(line[0]), line[2:] or None))
        if not batch:
            return
        if isinstance(flags, Exception):
            _fail(batch, [], [], flags)
            return
        text = flags.decode() if isinstance(flags, bytes) else str(flags)
        pos = 0
        for evs, _, future in batch:
            mine = text[pos:pos + len(evs)]
            pos += len(evs)
            if not future.done():
                accepted = mine.count("1")
                future.set_result((accepted, len(evs) - accepted))


def _fail(batch: list[_Waiter], reads: list[_Read], visits: list[_Visit], exc: BaseException) -> None:
    for future in [f for _, _, f in batch] + [f for _, f in reads] + [v[4] for v in visits]:
        if not future.done():
            future.set_exception(exc)
