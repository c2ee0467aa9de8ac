"""The ingest-stream consumer: timeline first, then routing and follow-ups, then acknowledge.

Entries are read with a consumer group. For a batch, tracking links are resolved first (a piece event binds
its links, a visit gets its link's details and moves onto its piece: `postrelay.core.stores.link_binding`), then the
mailpiece timelines are updated (idempotent),
every handler stages its durable effects (delivery records, follow-up schedules) into one
MULTI/EXEC transaction together with XACK+XDEL, so an entry is acknowledged exactly when its effects are
stored. Entries of a consumer that died are reclaimed with XAUTOCLAIM after `claim_idle` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

import redis
from pydantic import ValidationError
from redis.client import Pipeline

from postrelay.core import keys, stats
from postrelay.core.events import CanonicalEvent
from postrelay.core.logs import log_fields
from postrelay.core.replies import StreamEntries, stream_entries
from postrelay.core.stores import deliveries
from postrelay.core.stores.link_binding import LinkBinder, is_attached
from postrelay.core.timeline import TimelineWriter
from postrelay.workers.executor import DeliveryExecutor
from postrelay.workers.routing import destinations_for
from postrelay.workers.runtime import Runtime

log = logging.getLogger("postrelay.dispatcher")
POISON = keys.POISON


class EventHandler(Protocol):
    """Something that reacts to applied events by staging durable effects into the ack transaction.

    A handler may also define `committed()`, called once the transaction has been executed (e.g. to start
    work that needed the staged records to exist).
    """

    def stage(self, pipe: Pipeline, events: Sequence[CanonicalEvent]) -> None:
        """Add commands to `pipe` (run in the same transaction as the acknowledgement)."""
        ...


class RelayHandler:
    """Creates one delivery per (matching route destination, event); they start right after the commit.

    Each is recorded due at the lease deadline: this process hands it to its executor at once, and should it
    die first, the delivery comes due for any worker when the lease runs out.
    """

    def __init__(self, rt: Runtime, submit: Callable[[list[tuple[str, str]]], int]) -> None:
        self.rt = rt
        self.submit = submit
        self._staged: list[tuple[str, str]] = []
        self.destinations: frozenset[str] = frozenset()  # those the last batch staged deliveries for

    def stage(self, pipe: Pipeline, events: Sequence[CanonicalEvent]) -> None:
        """Stage deliveries for every destination whose routes match."""
        now = self.rt.clock()
        due = now + self.rt.config.delivery.lease
        dumped: dict[str, str] = {}
        self._staged = []
        for event in events:
            if is_attached(event):  # a held visit attached to its piece: routes had it when it came
                continue
            for dest in destinations_for(event, self.rt.config.routes):
                if event.id not in dumped:
                    dumped[event.id] = event.model_dump_json()
                self._staged.append(deliveries.stage(pipe, dest, event, now=now, due=due, event_json=dumped[event.id]))
        self.destinations = frozenset(deliveries.split_key(key)[0] for key, _ in self._staged)

    def committed(self) -> None:
        """Start the deliveries just committed."""
        started, self._staged = self._staged, []
        if started:
            self.submit(started)


def ensure_group(r: redis.Redis) -> None:
    """Create the consumer group (and the stream) if missing."""
    try:
        r.xgroup_create(keys.INGEST_STREAM, keys.INGEST_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Dispatcher:
    """Reads the ingest stream in batches and applies each entry exactly once in effect."""

    def __init__(self, rt: Runtime, handlers: Sequence[EventHandler], executor: DeliveryExecutor,
                 consumer: str | None = None, batch: int = 200, block_ms: int = 1000, claim_idle: float = 30.0) -> None:
        self.rt = rt
        self.handlers = list(handlers)
        self.executor = executor
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.timeline = TimelineWriter(rt.piece_store, rt.config.server.timeline_retention, index=rt.redis)
        self.links = LinkBinder(rt.redis)
        self.behind = False  # the last read got as many entries as it asked for: more are waiting in the stream
        ensure_group(rt.redis)

    def reclaim(self) -> int:
        """Take over entries another consumer read but never acknowledged, and process them."""
        r = self.rt.redis
        _, entries, *_ = r.xautoclaim(keys.INGEST_STREAM, keys.INGEST_GROUP, self.consumer,
                                      min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch)
        entries = [(eid, fields) for eid, fields in entries if fields]
        return self.process(entries)

    def run_once(self, block_ms: int | None = None) -> int:
        """Read one batch of new entries (waiting up to `block_ms`) and process it; returns entries handled.

        Reads no more than the executor has room for: a backlog stays in the stream, where any worker can
        take it, instead of piling up in this process. `behind` tells whether the read was full.
        """
        count = self.executor.room(self.batch)
        if count == 0:
            self.executor.wait_for_room(0.05)
            return 0
        resp = self.rt.redis.xreadgroup(keys.INGEST_GROUP, self.consumer, {keys.INGEST_STREAM: ">"},
                                        count=count, block=self.block_ms if block_ms is None else block_ms)
        entries = stream_entries(resp) if resp else []
        self.behind = len(entries) >= count
        return self.process(entries)

    def process(self, entries: StreamEntries) -> int:
        """Apply, stage effects and acknowledge a batch of stream entries."""
        if not entries:
            return 0
        r = self.rt.redis
        events: list[CanonicalEvent] = []
        poison: list[tuple[bytes, bytes]] = []
        for entry_id, fields in entries:
            raw = fields.get(b"e", b"")
            try:
                events.append(CanonicalEvent.model_validate_json(raw))
            except ValidationError:
                poison.append((entry_id, raw))
        applied = self.timeline.apply_many(self.links.resolve(events))  # links bound, visits moved to pieces
        pipe = r.pipeline(transaction=True)
        for handler in self.handlers:
            handler.stage(pipe, applied)
        for entry_id, raw in poison:
            pipe.rpush(POISON, json.dumps({"entry": entry_id.decode(), "raw": raw.decode(errors="replace")}))
        # per type: /metrics and `postrelay status` (a held visit attached to its piece was counted when it came)
        stats.count_events(pipe, [e for e in applied if not is_attached(e)], self.rt.clock())
        ids = [eid for eid, _ in entries]
        pipe.xack(keys.INGEST_STREAM, keys.INGEST_GROUP, *ids)
        pipe.xdel(keys.INGEST_STREAM, *ids)
        pipe.execute()  # if it fails, nothing starts: the next `stage` replaces what was staged
        for handler in self.handlers:
            committed = getattr(handler, "committed", None)
            if committed is not None:
                committed()
        if poison:
            log.error("moved %d unparseable stream entries to %s", len(poison), POISON)
        if log.isEnabledFor(logging.INFO):
            for event in applied:
                log_fields(log, logging.INFO, "event applied", {
                    "event_id": event.id, "type": event.type.value, "stage": event.stage and event.stage.value,
                    "source": event.source, "mailpiece_id": event.mailpiece.id})
        return len(entries)
