"""The webhook request path as a lean ASGI handler, in front of Starlette.

`POST /webhooks/{source}` for a configured source (and `POST /webhooks/postalytics/{token}`) is the one route
that carries load. Through Starlette it went through four middleware layers (server errors, request log,
exception handlers, router), a `Request`, the route's `request_response` wrapper and a `JSONResponse`:
about a fifth of the receiver's CPU per request. `WebhookApp` answers exactly those requests itself with
the same behaviour, and hands everything else to Starlette unchanged:

- routing: only a POST whose path is `/webhooks/<configured source>` or `/webhooks/postalytics/<token>` (no
  `root_path`) is taken; other methods (405), unknown or unconfigured sources (404), other paths (404, or
  Starlette's slash redirect) all stay with Starlette's router and error handlers;
- the work and its counters: `Receiver.ingest_request`, shared with the Starlette route (body size and time
  limits, signature checks, normalization, the Redis round trip, `postrelay_events_*` and the ingest
  histogram);
- answers: the same bytes and headers (`{"accepted":…}` as `JSONResponse` renders it; `HTTPError`s through
  `receiver.errors.error_response`, e.g. 503 with `Retry-After`); an unexpected exception is answered like
  Starlette's `ServerErrorMiddleware` with the app's handler (500, `Connection: close`) and re-raised, so
  uvicorn logs the traceback and closes the connection;
- the request log line and `postrelay_http_requests_total{path,status}`, as `RequestLogMiddleware` does.

`serve_lean` is that answering shell; tracking-link visits (`receiver.links`) go through it too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from postrelay.config import KNOWN_SOURCES
from receiver.errors import HTTPError, error_response, unhandled_error_handler
from receiver.requestlog import log_request

_PREFIX = "/webhooks/"
_POSTALYTICS = "postalytics/"
_POSTALYTICS_ROUTE = "/webhooks/postalytics/{token}"
_JSON = (b"content-type", b"application/json")


class FastWebhooks:
    """Matches and answers the webhook POSTs of one `Receiver` (see the module docstring)."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        configured = [s for s in KNOWN_SOURCES if getattr(receiver.config.sources, s) is not None]
        self.labels = {source: f"/webhooks/{source}" for source in configured}
        self.postalytics = "postalytics" in self.labels

    def match(self, scope: Scope) -> tuple[str, str | None, str] | None:
        """(source, token, route label) when Starlette would route this POST to `Receiver.webhook` for a
        configured source; None otherwise (Starlette then handles it)."""
        path: str = scope["path"]
        if not path.startswith(_PREFIX) or scope.get("root_path"):
            return None
        rest = path[len(_PREFIX):]
        label = self.labels.get(rest)
        if label is not None:
            return rest, None, label
        if self.postalytics and rest.startswith(_POSTALYTICS):
            token = rest[len(_POSTALYTICS):]
            if token and "/" not in token:  # the route's `{token}` matches `[^/]+`
                return "postalytics", token, _POSTALYTICS_ROUTE
        return None

    async def handle(self, scope: Scope, receive: Receive, send: Send, source: str, token: str | None,
                     label: str) -> None:
        """Answer one webhook POST."""
        async def work(info: dict[str, Any]) -> Answer:
            accepted, duplicates, ignored = await self.receiver.ingest_request(
                source, token, Headers(scope=scope), receive, info)
            body = b'{"accepted":%d,"duplicates":%d,"ignored":%d}' % (accepted, duplicates, ignored)
            return 200, [(b"content-length", b"%d" % len(body)), _JSON], body

        await serve_lean(self.receiver.prom, scope, receive, send, label, work)


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""(status, headers, body) of a lean answer."""


async def serve_lean(prom: Any, scope: Scope, receive: Receive, send: Send, label: str,
                     work: Callable[[dict[str, Any]], Awaitable[Answer]]) -> None:
    """Answer a request taken from Starlette with `work`'s (status, headers, body), as Starlette would.

    `work` fills the log line's fields in the dict it gets and may raise `HTTPError` (answered as JSON, e.g.
    503 with `Retry-After`); an unexpected exception is answered 500 (`Connection: close`) and re-raised. The
    request is counted (`postrelay_http_requests_total{path=label}`) and logged like `RequestLogMiddleware`.
    """
    started = time.perf_counter()
    info: dict[str, Any] = {}
    status = 500  # also what is counted and logged if the task is cancelled, as RequestLogMiddleware does
    response_started = False
    try:
        try:
            status, headers, body = await work(info)
        except HTTPError as exc:
            status = exc.status
            response_started = True
            await error_response(exc.status, exc.code, exc.detail, exc.headers)(scope, receive, send)
        else:
            response_started = True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
    except Exception as exc:
        status = 500
        info.setdefault("error", "internal_error")
        _count_and_log(prom, scope, label, status, started, info)
        label = ""  # counted and logged
        if not response_started:  # as ServerErrorMiddleware does with the app's 500 handler
            await (await unhandled_error_handler(None, exc))(scope, receive, send)  # type: ignore[arg-type]
        raise
    finally:
        if label:
            _count_and_log(prom, scope, label, status, started, info)


def _count_and_log(prom: Any, scope: Scope, label: str, status: int, started: float, info: dict[str, Any]) -> None:
    prom.http_request(label, status)
    log_request(scope["method"], scope["path"], label, status, started, info)


class WebhookApp(Starlette):
    """The Starlette app, with webhook POSTs for configured sources answered by `FastWebhooks` first, and
    tracking-link visits (`GET`/`HEAD /t/…`) by `links` (`receiver.links.LinkVisits`)."""

    webhooks: FastWebhooks | None = None
    links: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            lean = self.webhooks if method == "POST" else self.links if method in ("GET", "HEAD") else None
            if lean is not None:
                route = lean.match(scope)
                if route is not None:
                    scope["app"] = self
                    await lean.handle(scope, receive, send, *route)
                    return
        await super().__call__(scope, receive, send)
