"""Console sign-in: a token in, a session cookie out; CSRF tokens; failed sign-ins rate-limited per client.

A session is a random 256-bit id in an HttpOnly, SameSite=Strict cookie (Secure when the request came over
TLS, also behind a proxy that says so) and, in Redis, `pr:ui:session:<sha256(id)>` holding the token's name,
role and the session's CSRF token, expiring after `[ui] session_ttl`. Every request re-checks that the
token it was opened with is still configured with that role, so removing a token from the config ends its
sessions. The sign-in form is protected by a double-submit CSRF cookie (there is no session yet).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from postrelay.core import keys
from postrelay.core.config import Config
from postrelay.receiver.auth import Principal, known_tokens

COOKIE = "postrelay_session"
PRE_COOKIE = "postrelay_signin"


@dataclass(frozen=True)
class Session:
    """A signed-in console user: who (the token's name and role) and the CSRF token of the session."""

    principal: Principal
    csrf: str
    sid_hash: str


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def secure(request: Request) -> bool:
    """True when the browser talks TLS to us (directly, or to a proxy that sets X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def cookie_path(config: Config) -> str:
    """The console's path: cookies are sent to it only."""
    return config.ui.prefix


async def open_session(redis: Any, config: Config, principal: Principal) -> tuple[str, Session]:
    """Store a new session; returns (cookie value, session)."""
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    key = keys.ui_session(_hash(sid))
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, mapping={"name": principal.name, "role": principal.role, "csrf": csrf})
    pipe.expire(key, int(config.ui.session_ttl))
    await pipe.execute()
    return sid, Session(principal, csrf, _hash(sid))


async def current(redis: Any, config: Config, request: Request) -> Session | None:
    """The request's session, if its cookie names a live one whose token is still configured."""
    sid = request.cookies.get(COOKIE)
    if not sid or len(sid) > 100:
        return None
    raw = await redis.hgetall(keys.ui_session(_hash(sid)))
    if not raw:
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    if not any(name == data.get("name") and role == data.get("role") for name, _, role in known_tokens(config.server)):
        return None
    return Session(Principal(data["name"], data["role"]), data["csrf"], _hash(sid))


async def close_session(redis: Any, session: Session) -> None:
    """Sign out: the session is gone from Redis (the cookie is cleared by the caller)."""
    await redis.delete(keys.ui_session(session.sid_hash))


def set_cookie(response: Response, request: Request, config: Config, name: str, value: str, max_age: int) -> None:
    """An HttpOnly, SameSite=Strict cookie for the console's path (Secure over TLS)."""
    response.set_cookie(name, value, max_age=max_age, path=cookie_path(config), httponly=True, samesite="strict",
                        secure=secure(request))


def clear_cookie(response: Response, request: Request, config: Config, name: str) -> None:
    """Remove a console cookie."""
    response.delete_cookie(name, path=cookie_path(config), httponly=True, samesite="strict", secure=secure(request))


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def client_address(request: Request) -> str:
    """Who is signing in, for the failure counter (the proxy's view when behind one: uvicorn's proxy_headers)."""
    return request.client.host if request.client else "unknown"


async def blocked_for(redis: Any, config: Config, address: str) -> int:
    """Seconds until `address` may try again (0: it may now)."""
    pipe = redis.pipeline(transaction=False)
    key = keys.ui_signin_failures(address)
    pipe.get(key)
    pipe.ttl(key)
    count, ttl = await pipe.execute()
    if count is not None and int(count) >= config.ui.signin_attempts:
        return max(1, int(ttl))
    return 0


async def record_failure(redis: Any, config: Config, address: str) -> None:
    """Count a failed sign-in of `address` within the window (which starts at the first failure)."""
    key = keys.ui_signin_failures(address)
    pipe = redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, int(config.ui.signin_window), nx=True)
    await pipe.execute()


async def forget_failures(redis: Any, address: str) -> None:
    """A successful sign-in clears the address's failures."""
    await redis.delete(keys.ui_signin_failures(address))
