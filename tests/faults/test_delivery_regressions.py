"""Regression tests, one per delivery window the fault tests found (each failed before its fix).

- a job a worker took off the queue and died with before locking its delivery was never run again (now: a
  delivery claimed from the due-time set by a worker that died comes due again when the lease runs out);
- a worker that died between a delivery's done marker and starting the next update of the same piece left
  that piece's later deliveries waiting forever (and so did a head that lost its deadline);
- an attempt that outlasted the lease could run a second time, concurrently, on another worker;
- a 2xx answered while Redis was down (longer than redis-py's own retries) was sent again after recovery;
- `postrelay worker` exited (with status 0) when Redis restarted under it;
- a destination dripping its answer a byte at a time held a worker for as long as it liked.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from postrelay.adapters.base import DeliveryContext, Outcome
from postrelay.adapters.webhook import WebhookAdapter
from postrelay.core import keys
from postrelay.core.config import parse_config
from postrelay.core.scripts import lua
from postrelay.core.stores import deliveries
from postrelay.workers.delivery import attempt
from postrelay.workers.runtime import Runtime
from tests.support.processes import WorkerProcess, wait_for, write_config
from tests.support.redis_server import RedisServer
from tests.support.sink import Behaviour, RecordingSink
from tests.workers.conftest import FakeClock, close_worker, dispatch, drain, event, push, relay_handler


def _config(url: str, **delivery: Any) -> dict[str, Any]:
    return {"delivery": {"base_delay": "1s", **delivery},
            "destinations": {"hook": {"type": "webhook", "url": f"{url}/hook"}},
            "routes": [{"events": ["*"], "to": ["hook"]}]}


def _stage_only(rt: Runtime) -> None:
    """Dispatch, but the process "dies" right after the commit: nothing is handed to the executor."""
    handler = relay_handler(rt)
    handler.committed = lambda: None
    dispatch(rt, handlers=[handler])


def _no_start(key: str, seq: str) -> None:
    raise AssertionError(f"unexpected start of {key}")


def test_delivery_claimed_by_a_worker_that_died_before_running_it_is_run_again(make_runtime,
                                                                              clock: FakeClock) -> None:
    with RecordingSink() as sink:
        rt = make_runtime(_config(sink.url, lease="5s"))
        e = event("mailed")
        push(rt, e)
        _stage_only(rt)
        clock.advance(6)
        # another worker claims it (its score moves a lease ahead) and is SIGKILLed before running it
        assert len(lua("due_claim")(rt.redis, keys=[deliveries.DUE], args=[clock.now, 5, 10])) == 2
        drain(rt)
        assert sink.records == []  # claimed: nobody else runs it before the lease runs out
        clock.advance(6)
        drain(rt)
        assert sink.answered_2xx() == {e.id: 1}
        clock.advance(60)
        drain(rt)
        assert sink.answered_2xx() == {e.id: 1} and rt.redis.zcard(deliveries.DUE) == 0


def test_due_delivery_is_claimed_by_one_worker_only(make_runtime, clock: FakeClock) -> None:
    with RecordingSink() as sink:
        rt = make_runtime(_config(sink.url, lease="5s"))
        push(rt, *(event("mailed", piece=f"p{i}") for i in range(5)))
        _stage_only(rt)
        clock.advance(6)
        claim = lua("due_claim")
        first = claim(rt.redis, keys=[deliveries.DUE], args=[clock.now, 5, 100])
        second = claim(rt.redis, keys=[deliveries.DUE], args=[clock.now, 5, 100])
        assert len(first) == 10 and second == []


def test_worker_dying_after_the_done_marker_still_starts_the_next_update(make_runtime, clock: FakeClock) -> None:
    with RecordingSink() as sink:
        rt = make_runtime(_config(sink.url, lease="5s"))
        first, second = event("mailed", piece="ltr_9"), event("in_transit", piece="ltr_9")
        push(rt, first, second)
        _stage_only(rt)
        key = deliveries.delivery_key("hook", first.id)
        seq = deliveries.seq_key("hook", first)

        def killed(*args: Any) -> None:
            raise SystemExit("SIGKILL")  # the process dies after the done marker, before starting the next update

        with contextlib.suppress(SystemExit):
            attempt(rt, key, seq, killed)
        assert rt.redis.exists(keys.delivery_done(key))
        clock.advance(6)
        drain(rt)
        assert sink.answered_2xx() == {first.id: 1, second.id: 1}
        assert [r.webhook_id for r in sink.records] == [first.id, second.id]
        assert not rt.redis.exists(keys.delivery_record(key))


def test_a_head_without_a_deadline_is_found_through_the_updates_waiting_behind_it(make_runtime,
                                                                                  clock: FakeClock) -> None:
    """Regression (soak: Redis restarted 4x under 3000 events): a piece's head had lost its deadline, so it and
    everything behind it waited forever."""
    with RecordingSink() as sink:
        rt = make_runtime(_config(sink.url, lease="5s"))
        first, second = event("mailed", piece="ltr_7"), event("in_transit", piece="ltr_7")
        push(rt, first, second)
        _stage_only(rt)
        rt.redis.zrem(deliveries.DUE, deliveries.delivery_key("hook", first.id))  # the head is not watched
        for _ in range(3):
            clock.advance(6)
            drain(rt)
        assert [r.webhook_id for r in sink.records] == [first.id, second.id]
        assert sink.answered_2xx() == {first.id: 1, second.id: 1}


def test_attempt_longer_than_the_lease_is_never_run_twice(make_runtime, clock: FakeClock) -> None:
    with RecordingSink(lambda wid, n: Behaviour(delay=2.5)) as sink:
        rt = make_runtime(_config(sink.url, lease="1s", timeout="10s"))
        e = event("mailed")
        push(rt, e)
        _stage_only(rt)
        key, seq = deliveries.delivery_key("hook", e.id), deliveries.seq_key("hook", e)
        results: list[str] = []
        first = threading.Thread(target=lambda: results.append(attempt(rt, key, seq, _no_start)))
        first.start()
        assert wait_for(lambda: sink.records, 5)
        time.sleep(1.5)  # past the lease (Redis time) while the first attempt still waits for its answer
        clock.advance(5)  # and past its deadline (worker time): it comes due, is claimed, and finds it locked
        drain(rt)
        assert attempt(rt, key, seq, _no_start) == "locked"
        first.join(10)
        assert results == ["ok"]
        assert sink.answered_2xx() == {e.id: 1} and len(sink.records) == 1


def test_success_answered_during_a_redis_outage_is_not_sent_again(tmp_path: Path) -> None:
    server = RedisServer().start()
    restarted = threading.Event()
    started: list[threading.Thread] = []

    def kill_redis_then_answer(wid: str, n: int) -> Behaviour:
        if n == 0:
            server.stop(kill=True)  # Redis dies while the destination processes the request

            def restart() -> None:
                time.sleep(6.0)  # longer than redis-py's own reconnect retries (~4 s)
                restarted.set()  # before start(): the attempt may finish as soon as Redis listens, before start() returns
                server.start()

            started.append(threading.Thread(target=restart, daemon=True))
            started[-1].start()
        return Behaviour()

    try:
        with RecordingSink(kill_redis_then_answer) as sink:
            cfg = parse_config({**_config(sink.url, lease="30s"), "server": {"redis_url": server.url}})
            rt = Runtime(config=cfg, redis=redis.Redis(port=server.port))
            e = event("mailed")
            push(rt, e)
            _stage_only(rt)
            key, seq = deliveries.delivery_key("hook", e.id), deliveries.seq_key("hook", e)
            assert attempt(rt, key, seq, _no_start) == "ok"
            assert restarted.is_set()
            assert rt.redis.exists(keys.delivery_done(key))
            assert attempt(rt, key, seq, _no_start) == "already_done"
            assert sink.answered_2xx() == {e.id: 1}
            close_worker(rt)
            rt.close()
    finally:
        for thread in started:  # its start() may still wait for PING: not cleaned up under it
            thread.join(15)
        server.cleanup()


def test_worker_process_survives_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        with RecordingSink(lambda wid, n: Behaviour(delay=1.0)) as sink:
            config = write_config(tmp_path / "w.toml", {**_config(sink.url), "server": {"redis_url": server.url}})
            worker = WorkerProcess(config, tmp_path / "worker.log").start()
            try:
                first, second = event("mailed", piece="a"), event("mailed", piece="b")
                redis.Redis(port=server.port).xadd(keys.INGEST_STREAM, {"e": first.model_dump_json()})
                assert wait_for(lambda: sink.records, 20), worker.log()[-3000:]
                server.stop(kill=True)  # while the worker's job waits for the destination
                # the outage lasts 4 s: redis-py retries a connection once, at once, so every loop of the worker
                # meets many failed reconnects in that time; its own backoff (0.1 s doubling) reaches 1.6 s
                time.sleep(4.0)
                assert worker.alive, f"the worker exited during the outage:\n{worker.log()[-3000:]}"
                server.start()
                redis.Redis(port=server.port).xadd(keys.INGEST_STREAM, {"e": second.model_dump_json()})
                assert wait_for(lambda: sink.answered_2xx().get(second.id) == 1, 30), worker.log()[-3000:]
                assert sink.answered_2xx()[first.id] == 1
                assert worker.alive
            finally:
                worker.kill()
    finally:
        server.cleanup()


def test_dripping_answer_is_cut_at_the_timeout() -> None:
    with RecordingSink(lambda wid, n: Behaviour(kind="drip", drip_interval=0.3)) as sink, \
            httpx.Client(timeout=1.0) as client:
        adapter = WebhookAdapter("hook", WebhookAdapter.Settings(url=f"{sink.url}/hook"), client)
        started = time.monotonic()
        outcome = adapter.deliver(event("mailed"), DeliveryContext(destination="hook"))
        took = time.monotonic() - started
    assert outcome.status == "retry" and "timeout" in outcome.detail, outcome
    assert took < 1.0 + 0.3 + 0.5, took  # the read timeout, plus at most one more dripped byte


def test_huge_answer_is_not_read_into_memory() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"x" * 65536] * 200))  # 12.5 MiB

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        adapter = WebhookAdapter("hook", WebhookAdapter.Settings(url="http://127.0.0.1:9/hook"), client)
        response = adapter.call("POST", "http://127.0.0.1:9/hook", content=b"{}")
    assert not isinstance(response, Outcome)
    assert response.status_code == 200 and len(response.content) == 1 << 20
