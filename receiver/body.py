"""Reading a request body with a size limit and a time limit (slow senders cannot hold a worker)."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from receiver.errors import HTTPError


def too_large(limit: int) -> HTTPError:
    """413 naming the limit."""
    return HTTPError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")


def check_declared_length(declared: str | None, limit: int) -> None:
    """400 for a Content-Length that is not a number, 413 for one past `limit` (before reading anything)."""
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²".isdigit() is True, int("²") raises
            raise HTTPError(400, "invalid_content_length", "Content-Length is not a number")
        if len(declared) > 18 or int(declared) > limit:  # int() refuses over 4300 digits
            raise too_large(limit)


async def receive_body(receive: Receive, declared: str | None, limit: int, timeout: float) -> bytes:
    """The raw body from the ASGI `receive` channel, or 413 past `limit` bytes (declared or counted, so chunked
    bodies are limited too), or 408 when it takes longer than `timeout` seconds. A client that disconnects
    mid-body raises Starlette's `ClientDisconnect`, as `Request.stream()` does."""
    check_declared_length(declared, limit)
    try:
        async with asyncio.timeout(timeout):  # no extra task per request, unlike asyncio.wait_for
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
    except TimeoutError:
        raise HTTPError(408, "body_timeout", f"the body was not received within {timeout:g} s") from None


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body of a Starlette request (see `receive_body`)."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit, timeout)
