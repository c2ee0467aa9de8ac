"""The ingest-stream consumer: timeline first, then routing and follow-ups, then acknowledge.

Entries are read with a consumer group. For a batch, the mailpiece timelines are updated (idempotent),
every handler stages its durable effects (delivery records and RQ jobs, follow-up schedules) into one
MULTI/EXEC transaction together with XACK+XDEL, so an entry is acknowledged exactly when its effects are
stored. Entries of a consumer that died are reclaimed with XAUTOCLAIM after `claim_idle` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from pydantic import ValidationError
from redis.client import Pipeline

from postrelay import keys, stats
from postrelay.events import CanonicalEvent
from postrelay.timeline import TimelineWriter
from workers.deliveries import run_or_submit, stage_batch, stage_local
from workers.routing import destinations_for
from workers.runtime import Runtime

log = logging.getLogger("postrelay.dispatcher")
POISON = keys.POISON


class EventHandler(Protocol):
    """Something that reacts to applied events by staging durable effects into the ack transaction.

    A handler may also define `committed()`, called once the transaction has been executed (e.g. to start
    work that needed the staged records to exist).
    """

    def stage(self, pipe: Pipeline, events: Sequence[CanonicalEvent]) -> list[Any]:
        """Add commands to `pipe`; return RQ enqueue data for jobs to create in the same transaction."""
        ...


class RelayHandler:
    """Creates one delivery per (matching route destination, event).

    In a worker process (which has an executor) the deliveries start right after the commit in that same
    process; elsewhere (burst mode, tests) they are batched into a few RQ jobs.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._local: list[tuple[str, str]] = []

    def stage(self, pipe: Pipeline, events: Sequence[CanonicalEvent]) -> list[Any]:
        """Stage deliveries for every destination whose routes match."""
        self._local = []
        items = [(dest, event) for event in events for dest in destinations_for(event, self.rt.config.routes)]
        if not items:
            return []
        if self.rt.executor is not None:
            self._local = stage_local(pipe, self.rt, items)
            return []
        return stage_batch(pipe, self.rt, items)

    def committed(self) -> None:
        """Start the deliveries staged for this process's executor."""
        started, self._local = self._local, []
        for key, seq in started:
            run_or_submit(self.rt, key, seq)


def ensure_group(r: redis.Redis) -> None:
    """Create the consumer group (and the stream) if missing."""
    try:
        r.xgroup_create(keys.INGEST_STREAM, keys.INGEST_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Dispatcher:
    """Reads the ingest stream in batches and applies each entry exactly once in effect."""

    def __init__(self, rt: Runtime, handlers: Sequence[EventHandler] | None = None, consumer: str | None = None,
                 batch: int = 200, block_ms: int = 1000, claim_idle: float = 30.0) -> None:
        self.rt = rt
        self.handlers = list(handlers) if handlers is not None else [RelayHandler(rt)]
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.timeline = TimelineWriter(rt.pieces, rt.config.server.timeline_retention)
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

        With an executor, reads no more than it has room for: a backlog stays in the stream, where any
        worker can take it, instead of piling up in this process.
        """
        count = self.batch
        if self.rt.executor is not None:
            count = self.rt.executor.room(self.batch)
            if count == 0:
                self.rt.executor.wait_for_room(0.05)
                return 0
        resp = self.rt.redis.xreadgroup(keys.INGEST_GROUP, self.consumer, {keys.INGEST_STREAM: ">"},
                                        count=count, block=self.block_ms if block_ms is None else block_ms)
        if not resp:
            return 0
        return self.process(resp[0][1])

    def process(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
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
        applied = self.timeline.apply_many(events)
        pipe = r.pipeline(transaction=True)
        jobs: list[Any] = []
        for handler in self.handlers:
            jobs.extend(handler.stage(pipe, applied))
        if jobs:
            self.rt.queue.enqueue_many(jobs, pipeline=pipe)
        for entry_id, raw in poison:
            pipe.rpush(POISON, json.dumps({"entry": entry_id.decode(), "raw": raw.decode(errors="replace")}))
        stats.count_events(pipe, applied, self.rt.clock())  # per type: /metrics and `postrelay status`
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
        return len(entries)
