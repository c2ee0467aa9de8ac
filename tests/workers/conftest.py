"""Worker test harness: a runtime on the real test Redis with a controllable clock, and job draining."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from postrelay import keys
from postrelay.config import parse_config
from postrelay.events import CanonicalEvent, Mailpiece, Recipient
from workers import runtime
from workers.dispatcher import Dispatcher
from workers.runtime import Runtime


class FakeClock:
    """A clock tests move by hand; `sleep` advances it instead of waiting."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_runtime(redis_url: str, clock: FakeClock) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(config: dict[str, Any]) -> Runtime:
        config = {**config, "server": {**config.get("server", {}), "redis_url": redis_url}}
        rt = Runtime(config=parse_config(config), redis=redis.Redis.from_url(redis_url), clock=clock,
                     sleep=clock.sleep)
        runtime.install(rt)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def event(type: str = "processed_for_delivery", *, piece: str = "ltr_1", sid: str | None = None,
          country: str = "US", occurred: str = "2026-11-20T10:00:00+00:00",
          metadata: dict[str, Any] | None = None, email: str = "ada@example.com") -> CanonicalEvent:
    """A Lob-like canonical event."""
    return CanonicalEvent.build(
        source="lob", source_event_id=sid or f"evt_{piece}_{type}", type=type,
        occurred_at=datetime.fromisoformat(occurred),
        mailpiece=Mailpiece(id=piece, kind="letter", country=country),
        recipient=Recipient(name="Ada", email=email, country=country), metadata=metadata or {},
    )


def push(rt: Runtime, *events: CanonicalEvent) -> None:
    """Put events on the ingest stream exactly as the receiver's script does."""
    for e in events:
        rt.redis.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})


def dispatch(rt: Runtime, **kwargs: Any) -> Dispatcher:
    """Process everything on the stream once."""
    d = Dispatcher(rt, consumer="test", block_ms=10, **kwargs)
    while d.run_once(block_ms=10):
        pass
    return d


def drain(rt: Runtime, max_rounds: int = 20) -> None:
    """Run queued delivery jobs (and those they queue) until the queue is empty."""
    from workers import deliveries

    for _ in range(max_rounds):
        deliveries.reap(rt)
        if rt.queue.count == 0:
            return
        SimpleWorker([rt.queue], connection=rt.redis).work(burst=True, logging_level="ERROR")
    raise AssertionError("queue did not drain")


def scheduled(rt: Runtime) -> list[tuple[str, float]]:
    """(job id, scheduled epoch) of every delayed job."""
    reg = ScheduledJobRegistry(queue=rt.queue)
    return [(jid, reg.get_scheduled_time(jid).replace(tzinfo=UTC).timestamp()) for jid in reg.get_job_ids()]


def promote(rt: Runtime) -> int:
    """Move every delayed job to the queue now (what RQ's scheduler does when they are due)."""
    reg = ScheduledJobRegistry(queue=rt.queue)
    ids = reg.get_job_ids()
    for jid in ids:
        reg.remove(jid)
        rt.queue.enqueue_job(Job.fetch(jid, connection=rt.redis))
    return len(ids)
