"""Reading a request body with a size limit and a time limit (slow senders cannot hold a worker)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from receiver.errors import HTTPError


def too_large(limit: int) -> HTTPError:
    """413 naming the limit."""
    return HTTPError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body, or 413 past `limit` bytes, or 408 when it takes longer than `timeout` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²".isdigit() is True, int("²") raises
            raise HTTPError(400, "invalid_content_length", "Content-Length is not a number")
        if len(declared) > 18 or int(declared) > limit:  # int() refuses over 4300 digits
            raise too_large(limit)

    async def collect() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        async with asyncio.timeout(timeout):  # no extra task per request, unlike asyncio.wait_for
            return await collect()
    except TimeoutError:
        raise HTTPError(408, "body_timeout", f"the body was not received within {timeout:g} s") from None
