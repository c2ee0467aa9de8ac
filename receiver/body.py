"""Reading a request body with a size limit and a time limit (slow senders cannot hold a worker)."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from postrelay.receiver.errors import HTTPError


def too_large(limit: int) -> HTTPError:
    """413 naming the limit."""
    return HTTPError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")


class Deadlines:
    """Time limits of one fixed duration for many concurrent body reads, on a single event-loop timer.

    `asyncio.timeout(seconds)` arms (and then cancels) a loop timer per request, a measurable share of the
    request path under load. Here each read enters `asyncio.timeout(None)` (no timer) and is tracked with its
    deadline; since every deadline is `start + seconds`, the oldest entry expires first, and one timer armed
    for it is enough. When it fires, each expired read's timeout is rescheduled to its deadline (now past),
    so asyncio cancels it and raises TimeoutError exactly as `asyncio.timeout(seconds)` would.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[asyncio.Timeout, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def track(self, cm: asyncio.Timeout) -> None:
        """Limit the entered `cm` (made with `asyncio.timeout(None)`) to `seconds` from now."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the app now runs on another loop
            self._loop, self._timer = loop, None
            self._entries.clear()
        when = loop.time() + self.seconds
        self._entries[cm] = when
        if self._timer is None:
            self._timer = loop.call_at(when, self._fire)

    def untrack(self, cm: asyncio.Timeout) -> None:
        """The read ended (in any way)."""
        self._entries.pop(cm, None)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        while self._entries:
            cm, when = next(iter(self._entries.items()))
            if when > now:
                self._timer = self._loop.call_at(when, self._fire)
                return
            del self._entries[cm]
            cm.reschedule(when)  # in the past: asyncio cancels the read now and raises TimeoutError


def check_declared_length(declared: str | None, limit: int) -> None:
    """400 for a Content-Length that is not a number, 413 for one past `limit` (before reading anything)."""
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²".isdigit() is True, int("²") raises
            raise HTTPError(400, "invalid_content_length", "Content-Length is not a number")
        if len(declared) > 18 or int(declared) > limit:  # int() refuses over 4300 digits
            raise too_large(limit)


async def receive_body(receive: Receive, declared: str | None, limit: int, timeout: float | Deadlines) -> bytes:
    """The raw body from the ASGI `receive` channel, or 413 past `limit` bytes (declared or counted, so chunked
    bodies are limited too), or 408 when it takes longer than `timeout` seconds. A client that disconnects
    mid-body raises Starlette's `ClientDisconnect`, as `Request.stream()` does. `timeout` in seconds, or the
    `Deadlines` of the app (one loop timer for all requests)."""
    check_declared_length(declared, limit)
    if isinstance(timeout, Deadlines):
        deadlines, seconds = timeout, timeout.seconds
    else:
        deadlines, seconds = None, timeout
    try:
        # no extra task per request, unlike asyncio.wait_for; with `deadlines`, no timer per request either
        async with asyncio.timeout(None if deadlines else seconds) as cm:
            if deadlines is None:
                return await _receive(receive, limit)
            deadlines.track(cm)
            try:
                return await _receive(receive, limit)
            finally:
                deadlines.untrack(cm)
    except TimeoutError:
        raise HTTPError(408, "body_timeout", f"the body was not received within {seconds:g} s") from None


async def _receive(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the common case: the whole body in one message
        if len(body) > limit:
            raise too_large(limit)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
        message = await receive()


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body of a Starlette request (see `receive_body`)."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit, timeout)
