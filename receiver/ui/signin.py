"""The sign-in page (a token in, a session cookie out), its rate limit, and signing out."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from postrelay.receiver.auth import identify
from postrelay.receiver.ui import session as sessions
from postrelay.receiver.ui.app import Console, page, read_form

PRE_TTL = 3600


def _next(console: Console, raw: str | None) -> str:
    """Where to go after signing in: a console path only (never another site: no open redirect)."""
    target = (raw or "").strip()
    if target.startswith(console.prefix + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return console.url()


def _form(console: Console, request: Request, status: int = 200, message: str = "", headers: dict[str, str] | None
          = None) -> Response:
    token = secrets.token_urlsafe(24)
    resp = console.render(request, "signin.html", status=status, message=message, csrf=token,
                          next=_next(console, request.query_params.get("next")))
    resp.headers.update(headers or {})
    sessions.set_cookie(resp, request, console.config, sessions.PRE_COOKIE, token, PRE_TTL)
    return resp


async def form(request: Request) -> Response:
    """GET {prefix}/signin"""
    console: Console = request.app.state.console
    if await sessions.current(console.receiver.redis, console.config, request) is not None:
        return RedirectResponse(_next(console, request.query_params.get("next")), status_code=303)
    return _form(console, request)


async def submit(request: Request) -> Response:
    """POST {prefix}/signin: token -> session cookie; failures are counted per client address."""
    console: Console = request.app.state.console
    redis, config = console.receiver.redis, console.config
    address = sessions.client_address(request)
    wait = await sessions.blocked_for(redis, config, address)
    if wait:
        return _form(console, request, 429, f"Too many failed sign-ins from your address: try again in {wait} s.",
                     {"Retry-After": str(wait)})
    data = await read_form(request)
    if not sessions.same_token(request.cookies.get(sessions.PRE_COOKIE, ""), (data.get("csrf") or [""])[0]):
        return _form(console, request, 403, "The sign-in form expired: try again.")
    token = (data.get("token") or [""])[0]
    principal = identify(config.server, token) if token.strip() else None
    if principal is None:
        await sessions.record_failure(redis, config, address)
        return _form(console, request, 401, "That token is not valid." if token.strip() else "Enter a token.")
    await sessions.forget_failures(redis, address)
    sid, _ = await sessions.open_session(redis, config, principal)
    resp = RedirectResponse(_next(console, (data.get("next") or [""])[0]), status_code=303)
    sessions.set_cookie(resp, request, config, sessions.COOKIE, sid, int(config.ui.session_ttl))
    sessions.clear_cookie(resp, request, config, sessions.PRE_COOKIE)
    return resp


@page(post=True)
async def signout(console: Console, request: Request, sess: sessions.Session, form: dict[str, list[str]]) -> Response:
    """POST {prefix}/signout"""
    await sessions.close_session(console.receiver.redis, sess)
    resp = RedirectResponse(console.url("signin", done="Signed out."), status_code=303)
    sessions.clear_cookie(resp, request, console.config, sessions.COOKIE)
    return resp
