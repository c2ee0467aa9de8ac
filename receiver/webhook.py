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
"""

from __future__ import annotations

import time
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
        started = time.perf_counter()
        info: dict[str, Any] = {}
        status = 500  # also what is counted and logged if the task is cancelled, as RequestLogMiddleware does
        response_started = False
        try:
            try:
                accepted, duplicates, ignored = await self.receiver.ingest_request(
                    source, token, Headers(scope=scope), receive, info)
            except HTTPError as exc:
                status = exc.status
                response_started = True
                await error_response(exc.status, exc.code, exc.detail, exc.headers)(scope, receive, send)
            else:
                status = 200
                body = b'{"accepted":%d,"duplicates":%d,"ignored":%d}' % (accepted, duplicates, ignored)
                response_started = True
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % len(body)), _JSON]})
                await send({"type": "http.response.body", "body": body})
        except Exception as exc:
            status = 500
            info.setdefault("error", "internal_error")
            self._count_and_log(scope, label, status, started, info)
            label = ""  # counted and logged
            if not response_started:  # as ServerErrorMiddleware does with the app's 500 handler
                await (await unhandled_error_handler(None, exc))(scope, receive, send)  # type: ignore[arg-type]
            raise
        finally:
            if label:
                self._count_and_log(scope, label, status, started, info)

    def _count_and_log(self, scope: Scope, label: str, status: int, started: float, info: dict[str, Any]) -> None:
        self.receiver.prom.http_request(label, status)
        log_request(scope["method"], scope["path"], label, status, started, info)


class WebhookApp(Starlette):
    """The Starlette app, with webhook POSTs for configured sources answered by `FastWebhooks` first."""

    webhooks: FastWebhooks | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        webhooks = self.webhooks
        if webhooks is not None and scope["type"] == "http" and scope["method"] == "POST":
            route = webhooks.match(scope)
            if route is not None:
                scope["app"] = self
                await webhooks.handle(scope, receive, send, *route)
                return
        await super().__call__(scope, receive, send)
