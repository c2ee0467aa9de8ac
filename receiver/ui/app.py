"""The web console: server-rendered pages under `[ui] prefix` (default `/ui`), mounted into the receiver.

Pages are Jinja2 templates rendered with autoescaping on for every template, so provider data (names,
metadata, raw events) is always text, never HTML. No script at all: forms post (with the session's CSRF
token) and redirect back with the result; raw events expand with `<details>`; charts are inline SVG.
Every answer carries a strict Content-Security-Policy (`default-src 'none'`, styles from `/ui/static` only).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postrelay.core.stores.catalog import BadQuery
from postrelay.receiver.api.common import REDIS_DOWN
from postrelay.receiver.auth import Role
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.ui import session as sessions
from postrelay.receiver.ui.nav import NAV

HERE = Path(__file__).parent
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store")]
MAX_FORM = 64 * 1024
Page = Callable[..., Awaitable[Response]]


class SecurityHeaders:
    """Adds the CSP and friends to every console answer (pages, redirects, errors, static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in SECURITY_HEADERS if k not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def _dt(value: Any) -> str:
    """An ISO time as `2026-11-20 10:00 UTC` (as given when it does not parse)."""
    if not value:
        return "—"
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return when.strftime("%Y-%m-%d %H:%M") + (" UTC" if when.utcoffset() is not None else "")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["dt"] = _dt
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False)
    env.filters["label"] = lambda v: str(v or "—").replace("_", " ")
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.1%}"
    return env


TEMPLATES = Jinja2Templates(env=_env())


class Console:
    """What the pages share: the receiver (config, Redis, clock) and how to build links under the prefix."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.config = receiver.config
        self.prefix = receiver.config.ui.prefix

    def url(self, *parts: str, **query: Any) -> str:
        """A console path: `url("mailpieces", "lob", "ltr_1")` -> `/ui/mailpieces/lob/ltr_1` (segments quoted)."""
        path = "/".join([self.prefix, *(quote(str(p), safe="") for p in parts)]) if parts else self.prefix + "/"
        clean = {k: v for k, v in query.items() if v not in (None, "")}
        return path + ("?" + urlencode(clean) if clean else "")

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """A page, with the navigation, the session and the flash message (`?done=`) in its context."""
        sess = request.scope.get("console_session")
        base = {"request": request, "u": self.url, "nav": NAV, "session": sess, "active": context.pop("active", ""),
                "done": request.query_params.get("done", "")[:300], "failed": request.query_params.get("failed", "")[:300]}
        return TEMPLATES.TemplateResponse(request, template, {**base, **context}, status_code=status)

    def error(self, request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None
              ) -> Response:
        """An error page (the console's pages never answer JSON or a traceback)."""
        resp = self.render(request, "error.html", status=status, title=title, detail=detail)
        resp.headers.update(headers or {})
        return resp


async def read_form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form body (at most 64 KiB; a bigger one is a 413)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise HTTPError(413, "body_too_large", "the form is larger than 64 KiB")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=2000)


def page(role: Role = "read", post: bool = False) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """A console handler: needs a session whose token has `role`; a POST also needs the session's CSRF token.

    No session: a redirect to the sign-in page (which comes back here afterwards). The handler is called as
    `handler(console, request, session, form)`; `form` is the parsed body of a POST, else {}.
    """

    def wrap(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def run(request: Request) -> Response:
            console: Console = request.app.state.console
            sess = await sessions.current(console.receiver.redis, console.config, request)
            if sess is None:
                if post:
                    return console.error(request, 401, "Signed out", "Your session ended: sign in again.")
                return RedirectResponse(console.url("signin", next=request.url.path + (
                    "?" + request.url.query if request.url.query else "")), status_code=303)
            request.scope["console_session"] = sess
            form: dict[str, list[str]] = {}
            if post:
                form = await read_form(request)
                if not sessions.same_token(sess.csrf, (form.get("csrf") or [""])[0]):
                    return console.error(request, 403, "Expired form", "This form is stale or was not sent by the "
                                         "console (missing CSRF token). Reload the page and try again.")
            if not sess.principal.may(role):
                return console.error(request, 403, "Not allowed", f"Token {sess.principal.name!r} may only look "
                                     f"(role {sess.principal.role!r}); this needs an {role!r} token.")
            return await handler(console, request, sess, form)

        return run

    return wrap


def error_handlers(console: Console) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return console.error(request, exc.status, exc.code.replace("_", " ").capitalize(), exc.detail, exc.headers)

    async def bad_query(request: Request, exc: Exception) -> Response:
        return console.error(request, 400, "Cannot search that", str(exc))

    async def redis_down(request: Request, exc: Exception) -> Response:
        retry = str(console.config.server.retry_after)
        return console.error(request, 503, "Redis is unreachable", "The store did not answer; retry in a moment.",
                             {"Retry-After": retry})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return console.error(request, status, "Not found" if status == 404 else "Not allowed",
                             f"No page {request.url.path} for {request.method}.")

    from starlette.exceptions import HTTPException

    return {HTTPError: http_error, BadQuery: bad_query, HTTPException: not_found,
            **dict.fromkeys(REDIS_DOWN, redis_down)}
