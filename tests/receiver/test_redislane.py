"""receiver.redislane: pipelined calls answered in order, error replies as redis-py's exceptions, and the
failures (Redis down, no reply within the timeout, a connection killed) raised as redis-py's errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from postrelay.receiver.redislane import RedisLane, Replies, pack


async def _call(lane: RedisLane, *commands: bytes) -> list[Any]:
    await lane.connect()
    future: asyncio.Future[Replies] = asyncio.get_running_loop().create_future()
    lane.send(b"".join(commands), len(commands), future.set_result)
    replies = await future
    if isinstance(replies, BaseException):
        raise replies
    return replies


def test_pipelined_calls_are_answered_in_order_with_error_replies_in_place(redis_url: str) -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=2)
        lane = RedisLane(client)
        try:
            first, second = await asyncio.gather(
                _call(lane, pack("SET", "k", "v€"), pack("GET", "k"), pack("GET", "missing")),
                _call(lane, pack("INCR", "k"), pack("EVALSHA", "0" * 40, 0), pack("STRLEN", "k")))
            return first, second
        finally:
            lane.close()
            await client.aclose()

    first, second = asyncio.run(run())
    assert first == [b"OK", "v€".encode(), None]
    assert isinstance(second[0], redis.exceptions.ResponseError)
    assert isinstance(second[1], redis.exceptions.NoScriptError)
    assert second[2] == 4


def test_redis_down_raises_connection_error() -> None:
    async def run() -> None:
        client = redis.asyncio.Redis(port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        lane = RedisLane(client)
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.gather(lane.connect(), lane.connect())
        await client.aclose()

    asyncio.run(run())


def test_no_reply_within_the_socket_timeout_fails_the_call_and_the_next_one_reconnects(redis_url: str) -> None:
    async def run() -> tuple[BaseException | None, list[Any]]:
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.3)
        control = redis.asyncio.Redis.from_url(redis_url, socket_timeout=10)
        lane = RedisLane(client)
        try:
            await _call(lane, pack("PING"))
            await control.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # Redis holds the lane's next call
            failure = None
            try:
                await _call(lane, pack("PING"))
            except redis.exceptions.TimeoutError as exc:
                failure = exc
            await control.ping()  # answered when the pause is over
            return failure, await _call(lane, pack("ECHO", "back"))
        finally:
            lane.close()
            await client.aclose()
            await control.aclose()

    failure, after = asyncio.run(run())
    assert isinstance(failure, redis.exceptions.TimeoutError)
    assert after == [b"back"]


def test_a_killed_connection_is_replaced_on_the_next_call(redis_url: str) -> None:
    async def run() -> list[Any]:
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=2)
        lane = RedisLane(client)
        try:
            [lane_id] = await _call(lane, pack("CLIENT", "ID"))
            await client.execute_command("CLIENT", "KILL", "ID", lane_id)
            deadline = asyncio.get_running_loop().time() + 5
            while lane.ready and asyncio.get_running_loop().time() < deadline:  # the close reaches the lane
                await asyncio.sleep(0.01)
            return await _call(lane, pack("CLIENT", "ID"))
        finally:
            lane.close()
            await client.aclose()

    [new_id] = asyncio.run(run())
    assert isinstance(new_id, int)
