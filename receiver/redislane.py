"""A lean Redis connection for the request path: packed commands written straight to the socket, replies parsed
by hiredis and handed to a callback, pipelined (several calls may be in flight; replies come back in order).

redis-py's asyncio call path (connection pool, retry wrapper, timeouts, the pure-Python reply parser, a task
per flush) cost ~120 µs of CPU per round trip on the receiver's ingest path, more than the rest of a tracking-
link visit; this lane costs ~20 µs (measured: `bench/RESULTS.md`, tracking links). It borrows redis-py only
to connect: `connection_pool.make_connection()` opens the socket and does the handshake the URL asks for (TLS,
AUTH/ACL, SELECT, Sentinel's master lookup), then the lane takes over the socket's transport
(`set_protocol`) and redis-py's connection object is dropped. The connection speaks RESP2 (no push messages
that could be mistaken for replies).

Failures are redis-py's exceptions, so callers treat them like any Redis outage: a connection that cannot be
made raises `ConnectionError` from `connect`; a lost connection fails every call in flight with
`ConnectionError`; a reply that does not arrive within the client's `socket_timeout` fails every call in
flight with `TimeoutError` and closes the connection (the next call connects again). An error reply is
handed over as the exception redis-py would raise (`NoScriptError`, `ResponseError`, ...), in place of its reply.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, TimeoutError

Replies = list[Any] | BaseException
"""What a call's callback gets: its replies in order (error replies as exceptions), or the failure of all."""
_Call = tuple[int, list[Any], Callable[[Replies], None], float]  # (replies expected, got so far, callback, sent at)


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(*args: bytes | str | int | float) -> bytes:
    """One command as RESP (what redis-py sends: str as UTF-8, numbers as their repr)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif not isinstance(arg, bytes):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Wire(asyncio.Protocol):
    """One connection's reply side: the calls in flight on it, in order, and its reply parser."""

    def __init__(self, lane: RedisLane, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.lane = lane
        self.writer = writer  # kept: a StreamWriter closes its transport when it is collected
        self.transport: Any = writer.transport
        self.loop = loop
        self.reader = hiredis.Reader()
        self.calls: collections.deque[_Call] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def send(self, payload: bytes, replies: int, callback: Callable[[Replies], None]) -> None:
        self.calls.append((replies, [], callback, self.loop.time()))
        self.transport.write(payload)
        timeout = self.lane.timeout
        if self.timer is None and timeout is not None:
            self.timer = self.loop.call_later(timeout, self._check_timeout)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        calls = self.calls
        while calls:
            reply = reader.gets()
            if reply is False:
                return
            if isinstance(reply, hiredis.ReplyError):
                reply = BaseParser.parse_error(str(reply))
            expected, got, callback, _ = calls[0]
            got.append(reply)
            if len(got) == expected:
                calls.popleft()
                callback(got)

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"Redis connection lost: {exc}" if exc else "Redis closed the connection"))

    def fail(self, exc: BaseException, abort: bool = False) -> None:
        """Fail every call in flight with `exc`; this wire is no longer the lane's (`abort`: close it now)."""
        if self.lane.wire is self:
            self.lane.wire = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if abort and not self.transport.is_closing():
            self.transport.abort()
        calls, self.calls = self.calls, collections.deque()
        for _, _, callback, _ in calls:
            callback(exc)

    def _check_timeout(self) -> None:
        self.timer = None
        timeout = self.lane.timeout
        if not self.calls or timeout is None:
            return
        waited = self.loop.time() - self.calls[0][3]
        if waited >= timeout:
            self.fail(TimeoutError("Timeout reading from Redis"), abort=True)
        else:
            self.timer = self.loop.call_later(timeout - waited, self._check_timeout)


class RedisLane:
    """One dedicated, lazily (re)connected connection to the Redis of `redis` (an asyncio client)."""

    def __init__(self, redis: Redis) -> None:
        self._pool = redis.connection_pool
        timeout = self._pool.connection_kwargs.get("socket_timeout")
        self.timeout: float | None = float(timeout) if timeout else None
        self.wire: _Wire | None = None
        self._connecting: asyncio.Future[None] | None = None

    @property
    def ready(self) -> bool:
        """True when a call can be sent now (connected, on the running loop)."""
        wire = self.wire
        return (wire is not None and not wire.transport.is_closing()
                and wire.loop is asyncio.get_running_loop())

    async def connect(self) -> None:
        """Connect (once, however many callers wait); raises redis-py's ConnectionError/TimeoutError."""
        if self.ready:
            return
        loop = asyncio.get_running_loop()
        connecting = self._connecting
        if connecting is not None and not connecting.done() and connecting.get_loop() is loop:
            return await asyncio.shield(connecting)
        if self.wire is not None:  # closing, or made on another event loop (which may be gone)
            self.wire.fail(ConnectionError("Redis connection replaced"), abort=self.wire.loop is loop)
        self._connecting = connecting = loop.create_future()
        try:
            conn: Any = self._pool.connection_class(**_resp2(self._pool.connection_kwargs))
            await conn.connect()
            wire = _Wire(self, conn._writer, loop)
            conn._reader = conn._writer = None  # the socket is the lane's now: redis-py must not close it
            wire.transport.set_protocol(wire)
            self.wire = wire
        except BaseException as exc:
            connecting.set_exception(exc)
            connecting.exception()  # marked retrieved: other waiters get it through their shield
            raise
        finally:
            self._connecting = None
        connecting.set_result(None)

    def send(self, payload: bytes, replies: int, callback: Callable[[Replies], None]) -> None:
        """Write `payload` (`replies` packed commands); `callback` gets their replies, or the failure of all.
        Only when `ready`."""
        assert self.wire is not None
        self.wire.send(payload, replies, callback)

    def close(self) -> None:
        """Close the connection (calls still in flight fail with ConnectionError)."""
        wire = self.wire
        if wire is not None:
            wire.fail(ConnectionError("Redis lane closed"))
            wire.transport.close()


def _resp2(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pool's connection options, for RESP2 (redis-py 8's maintenance notifications need RESP3: off)."""
    out = {**kwargs, "protocol": 2}
    for name in ("maint_notifications_config", "maint_notifications_pool_handler"):
        if name in out:
            out[name] = None
    return out


__all__ = ["RedisLane", "Replies", "bulk", "pack"]
