"""How uvicorn serves the receiver: the request head bounded before it is parsed, protocol errors as JSON.

uvicorn's httptools protocol (the one `uvicorn[standard]` picks) buffers a request line and headers of any
size: a 64 MiB header was parsed in full (hundreds of MB of memory, seconds of CPU, with every other request
on the loop waiting). `BoundedHttpToolsProtocol` counts the bytes of each request head as they arrive and,
past `[server] max_header_bytes`, answers `431 {"error": "headers_too_large", ...}` and closes the connection
without reading further. It also answers malformed HTTP (which uvicorn answers with a text/plain 400) with
`400 {"error": "invalid_http", ...}`. With h11 (`BoundedH11Protocol`, for those who prefer the pure-Python
parser) h11's own `max_incomplete_event_size` bounds the head, and the same JSON answers are sent.

Websocket upgrades are not offered (`ws="none"`): an `Upgrade: websocket` request is an ordinary HTTP request
to the app, which answers 404/405 JSON like any other. The header count (`[server] max_headers`) and the
head size for servers that do not use these protocols are checked by the app itself (`receiver.edge`).

`uvicorn_options(config)` is what `postrelay serve` / `run` (and the tests) pass to uvicorn.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from postrelay.core.config import DEFAULT_MAX_HEADER_BYTES, Config

HEAD_TOO_LARGE = ("headers_too_large", "the request line and headers exceed {limit} bytes")
INVALID_HTTP = ("invalid_http", "the request is not valid HTTP/1.1")
_PHRASES = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


def protocol_answer(status: int, code: str, detail: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 answer with the `{"error","detail"}` JSON body."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
        status, _PHRASES[status], len(body), body)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head found too large when it completed (httptools
    turns it into an HttpParserCallbackError)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head (431) and JSON protocol errors (400)."""

    def __init__(self, config: UvicornConfig, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self._head_bytes = 0  # bytes fed since the current request's head began, while it is incomplete
        self._in_head = True
        self._chunk = 0
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        """uvicorn's, plus the head limit (and no warning per `Upgrade` request: it is served as plain HTTP)."""
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._too_large:
                self._reject(431, *HEAD_TOO_LARGE)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._reject(400, *INVALID_HTTP)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():  # never with ws="none"
                self.handle_websocket_upgrade()
            return
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:  # checked per chunk: memory stays within a chunk of it
                self._reject(431, *HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_bytes + self._chunk > self.max_head:  # possibly over: measure exactly (rare)
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_head:
                self._too_large = True
                raise _HeadTooLarge  # httptools stops parsing; data_received answers 431
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        self._reject(400, *INVALID_HTTP)

    def _reject(self, status: int, code: str, detail: str) -> None:
        self.transport.write(protocol_answer(status, code, detail.format(limit=self.max_head)))
        self.transport.close()


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with h11's head limit answered 431, and JSON protocol errors (400)."""

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or 0
        if limit and len(self.conn.trailing_data[0]) > limit:
            answer = protocol_answer(431, HEAD_TOO_LARGE[0], HEAD_TOO_LARGE[1].format(limit=limit))
        else:
            answer = protocol_answer(400, *INVALID_HTTP)
        self.transport.write(answer)
        self.transport.close()


def uvicorn_options(config: Config, h11: bool = False) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that apply the limits above (httptools, as
    uvicorn's `auto` picks with uvicorn[standard]; `h11=True` for the pure-Python parser)."""
    return {"http": BoundedH11Protocol if h11 else BoundedHttpToolsProtocol, "ws": "none",
            "h11_max_incomplete_event_size": config.server.max_header_bytes}
