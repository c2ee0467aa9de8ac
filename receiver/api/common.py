"""What every JSON API handler shares: auth, query parsing, the stores, and errors as `{"error","detail"}`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import redis.exceptions
from starlette.requests import Request
from starlette.responses import Response

from postrelay.core.config import KNOWN_SOURCES
from postrelay.core.durations import parse_when
from postrelay.core.events import ALL_TYPES
from postrelay.core.stores.catalog import BadQuery, Filters, Stores
from postrelay.receiver.auth import Principal, Role, bearer
from postrelay.receiver.errors import HTTPError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
              redis.exceptions.RedisClusterException, OSError)
Handler = Callable[[Request], Awaitable[Response]]


def receiver_of(request: Request) -> Any:
    """The `receiver.app.Receiver` serving this request."""
    return request.app.state.receiver


def stores(request: Request) -> Stores:
    """Where the indexes and mailpieces are read."""
    rc = receiver_of(request)
    return Stores(queue=rc.redis, pieces=rc.pieces, sources=KNOWN_SOURCES)


def authorize(request: Request, role: Role = "read") -> Principal:
    """The request's bearer token, checked for `role` (401 / 403 otherwise)."""
    return bearer(receiver_of(request).config.server, request.headers, role)


def unavailable(request: Request) -> HTTPError:
    """503 with Retry-After: Redis did not answer."""
    retry_after = str(receiver_of(request).config.server.retry_after)
    return HTTPError(503, "redis_unavailable", "Redis is unreachable; retry later", {"Retry-After": retry_after})


def guarded(handler: Handler) -> Handler:
    """Turn BadQuery into 400 `invalid_query` and an unreachable Redis into 503."""

    @wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except BadQuery as exc:
            raise HTTPError(400, "invalid_query", str(exc)) from None
        except REDIS_DOWN:
            raise unavailable(request) from None

    return run


def limit_of(params: Any) -> int:
    """`limit=` (1…500, default 50)."""
    raw = params.get("limit")
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery("limit must be an integer from 1 to 500") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadQuery("limit must be an integer from 1 to 500")
    return value


def since_of(params: Any, now: float) -> float | None:
    """`since=`: an ISO date/time or a duration ago (`2h`, `3d`)."""
    raw = params.get("since")
    if not raw:
        return None
    try:
        return parse_when(raw, now).timestamp()
    except ValueError as exc:
        raise BadQuery(f"since: {exc}") from None


def filters_of(params: Any, now: float) -> Filters:
    """The mailpiece search filters of a query string (validated: stage and source must exist)."""
    stage = params.get("stage", "").strip()
    if stage and stage not in ALL_TYPES:
        raise BadQuery(f"stage {stage!r} is not a canonical type: {', '.join(sorted(ALL_TYPES))}")
    source = params.get("source", "").strip()
    if source and source not in KNOWN_SOURCES:
        raise BadQuery(f"source {source!r} is unknown: {', '.join(KNOWN_SOURCES)}")
    text = {k: params.get(k, "").strip() for k in ("q", "email", "campaign")}
    for k, v in text.items():
        if len(v) > 200:
            raise BadQuery(f"{k} is longer than 200 characters")
    return Filters(q=text["q"], email=text["email"], campaign=text["campaign"], stage=stage, source=source,
                   since=since_of(params, now))
