"""The receiver's one ASGI middleware, in front of the router: limits, error answers, the request log and counter.

Starlette wraps its router in two layers of its own (server errors, exception handlers) plus each user
middleware; on the webhook route, which carries the load, those layers were about a fifth of the receiver's
CPU per request. `ReceiverApp` builds its stack without them, and `Edge` does their work once, for every route:

- **limits before anything else**: more than `[server] max_headers` header fields, or more than
  `[server] max_header_bytes` of them, is `431 headers_too_large` (the protocol, `receiver.server`, has
  already refused bigger heads before parsing them; this covers other servers and the field count);
- **errors are `{"error","detail"}` JSON**: `HTTPError` as raised; Starlette's 404/405 in the same shape
  (`receiver.errors.routing_error`: a trailing slash is a 307 with a JSON body, a 404 never echoes a path
  segment that may be a secret); anything else a 500 with `Connection: close`, re-raised so the server logs
  the traceback and drops the connection;
- **a client that disconnects mid-body** is a client abort: no answer, no traceback, counted in
  `postrelay_client_aborts_total{path}` and logged with status 499 and `error: client_disconnected`;
- **websocket connections** (from servers that offer them; `postrelay serve` does not) are refused with a
  JSON 404 when the server supports denial responses, else closed;
- **one log line and one `postrelay_http_requests_total{path,status}` increment per request**
  (`receiver.requestlog`), with the fields handlers add through `request_info`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postrelay.core.config import ServerConfig
from postrelay.receiver.errors import HTTPError, error_response, headers_too_large, routing_error, unhandled_error
from postrelay.receiver.metrics import ReceiverMetrics
from postrelay.receiver.requestlog import INFO_KEY, log_request, route_label

CLIENT_ABORT = 499  # nginx's "client closed request": logged and counted, never sent


class ReceiverApp(Starlette):
    """Starlette whose stack is the user middleware (`Edge` first) around the router, nothing else; `front`
    (when set before the first request) wraps the router, e.g. `receiver.visitroutes.VisitRoutes`."""

    front: Callable[[Router], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = self.router if self.front is None else self.front(self.router)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


class Edge:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, metrics: ReceiverMetrics, server: ServerConfig) -> None:
        self.app = app
        self.metrics = metrics
        self.max_headers = server.max_headers
        self.max_header_bytes = server.max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _head_error(self, scope: Scope) -> HTTPError | None:
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            return headers_too_large(f"more than {self.max_headers} header fields")
        if sum(map(len, itertools.chain.from_iterable(headers))) > self.max_header_bytes:
            return headers_too_large(f"the header fields exceed {self.max_header_bytes} bytes")
        return None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        info: dict[str, Any] = scope.setdefault(INFO_KEY, {})
        status = 500
        response_started = False

        async def send_status(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
            await send(message)

        try:
            error = self._head_error(scope)
            if error is not None:
                info["error"] = error.code
                await error_response(error.status, error.code, error.detail, error.headers)(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        except ClientDisconnect:
            status = CLIENT_ABORT
            info["error"] = "client_disconnected"
            self.metrics.client_abort(route_label(scope))
        except HTTPError as exc:
            if response_started:
                raise
            info.setdefault("error", exc.code)
            await error_response(exc.status, exc.code, exc.detail, exc.headers)(scope, receive, send_status)
        except HTTPException as exc:  # the router's 404 / 405
            if response_started:
                raise
            await routing_error(Request(scope), exc)(scope, receive, send_status)
        except Exception:
            status = 500
            info.setdefault("error", "internal_error")
            if not response_started:
                await unhandled_error(scope.get("path", ""))(scope, receive, send)
            raise  # the server logs the traceback and closes the connection
        finally:
            label = route_label(scope)
            self.metrics.http_request(label, status)
            log_request(scope.get("method"), scope.get("path", ""), label, status, started, info)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            body = JSONResponse({"error": "not_found", "detail": "this server offers no websocket endpoints"}).body
            await send({"type": "websocket.http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
