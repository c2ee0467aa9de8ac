"""Worker test harness: a runtime on the real test Redis with a controllable clock, driven through the same
`Worker` assembly (executor, dispatcher, due-time loop) that `postrelay worker` runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import redis

from postrelay.core import keys
from postrelay.core.config import parse_config
from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
from postrelay.core.stores import deliveries
from postrelay.workers.dispatcher import Dispatcher, RelayHandler
from postrelay.workers.runtime import Runtime
from postrelay.workers.worker import Worker


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
        made.append(rt)
        return rt

    yield make
    for rt in made:
        close_worker(rt)
        rt.close()


_WORKERS: dict[int, tuple[Runtime, Worker]] = {}


def worker_for(rt: Runtime) -> Worker:
    """The worker assembly (executor, dispatcher, loops) for `rt`: the same objects `postrelay worker` runs."""
    entry = _WORKERS.get(id(rt))
    if entry is None or entry[0] is not rt:
        entry = (rt, Worker(rt, name="test"))
        _WORKERS[id(rt)] = entry
    return entry[1]


def close_worker(rt: Runtime) -> None:
    """Stop `rt`'s worker executor (tests that build runtimes by hand call it)."""
    entry = _WORKERS.pop(id(rt), None)
    if entry is not None:
        entry[1].shutdown(timeout=10)


def relay_handler(rt: Runtime) -> RelayHandler:
    """A relay handler that starts its deliveries in `rt`'s worker executor."""
    return RelayHandler(rt, worker_for(rt).submit_many)


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


def dispatch(rt: Runtime, handlers: list[Any] | None = None, **kwargs: Any) -> Dispatcher:
    """Process everything on the stream once (the worker's dispatcher, or one with these `handlers`);
    deliveries start in the worker's executor, as in production."""
    w = worker_for(rt)
    d = w.dispatcher if handlers is None and not kwargs else Dispatcher(
        rt, handlers if handlers is not None else [relay_handler(rt)], w.executor, consumer="test", **kwargs)
    while d.run_once(block_ms=10):
        pass
    w.batcher.flush_all()  # batching destinations: what was staged goes out now, whatever its linger
    w.executor.wait_idle(60)
    return d


def drain(rt: Runtime, timeout: float = 60.0) -> None:
    """Run every delivery due by the (fake) clock, and those they start, until nothing is left to do now."""
    w = worker_for(rt)
    w.executor.wait_idle(timeout)
    deadline = time.monotonic() + timeout
    while True:
        moved = w.due.run_once() + w.batcher.flush_all()
        assert w.executor.wait_idle(max(0.0, deadline - time.monotonic())), "attempts still running"
        if moved == 0:
            return
        assert time.monotonic() < deadline, "deliveries kept coming due"


def scheduled(rt: Runtime) -> list[tuple[str, float]]:
    """(delivery key, due epoch) of every delivery due later than the clock's now."""
    return [(k.decode(), score) for k, score in rt.redis.zrangebyscore(deliveries.DUE, f"({rt.clock()}", "+inf",
                                                                         withscores=True)]


def promote(rt: Runtime) -> int:
    """Make every delivery due now, whatever its due time (what waiting for it would do)."""
    items = rt.redis.zrange(deliveries.DUE, 0, -1)
    if items:
        rt.redis.zadd(deliveries.DUE, dict.fromkeys(items, rt.clock()))
    return len(items)
