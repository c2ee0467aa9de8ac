"""Error answers: always `{"error": "<code>", "detail": "<what was wrong>"}`, never a traceback."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match

from postrelay.core.config import KNOWN_SOURCES

KNOWN_SOURCES_SET = frozenset(KNOWN_SOURCES)


class HTTPError(Exception):
    """An error answer with a machine-readable code and a human-readable detail."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def bad_request(code: str, detail: str) -> HTTPError:
    """400: the body cannot be parsed or is not a valid event."""
    return HTTPError(400, code, detail)


def unauthorized(code: str, detail: str) -> HTTPError:
    """401: signature, token or timestamp rejected."""
    return HTTPError(401, code, detail)


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body every failure uses."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def headers_too_large(detail: str) -> HTTPError:
    """431: too many header fields, or too many bytes of them (`[server] max_headers`, `max_header_bytes`)."""
    return HTTPError(431, "headers_too_large", detail)


def unhandled_error(path: str) -> JSONResponse:
    """Last resort: a 500 with no internals in the body (the traceback goes to the log only). A webhook is
    told its event was not accepted (the provider sends it again); any other request only to retry.

    `Connection: close` because the error is re-raised after this answer and the server then drops the
    connection: a client that reused it for its retry would get a connection reset instead of an answer.
    """
    detail = ("unexpected error; the event was not accepted, retry later" if path.startswith("/webhooks/")
              else "unexpected error (logged by the server); retry later")
    return error_response(500, "internal_error", detail, {"Connection": "close"})


_ROUTING_CODES = {404: "not_found", 405: "method_not_allowed"}


def safe_path(path: str, literals: frozenset[str]) -> str:
    """`path` for an error detail: segments that are not literal parts of a route (`literals`) become `…`,
    so a token, an id or anything else a client put there (possibly a secret) is never echoed."""
    return "/".join(seg if seg in literals or not seg else "…" for seg in path.split("/")) or "/"


def _route_literals(app: Any) -> frozenset[str]:
    cached = getattr(app.state, "route_literals", None)
    if cached is None:
        words: set[str] = set()
        for route in app.routes:
            words.update(seg for seg in getattr(route, "path", "").split("/") if seg and "{" not in seg)
        cached = app.state.route_literals = frozenset(words)
    return cached


def _slash_twin(request: Request) -> str | None:
    """The path with its trailing slash removed or added, when a route serves that one (for this method)."""
    path = request.scope["path"]  # not request.url.path: a decoded `?` or `#` would cut it
    if path == "/":
        return None
    twin = path[:-1] if path.endswith("/") else path + "/"
    scope = {**request.scope, "path": twin}
    for route in request.app.routes:
        if route.matches(scope)[0] == Match.FULL:  # the method is served there too
            return twin
    return None


def routing_error(request: Request, exc: HTTPException) -> JSONResponse:
    """The router's 404/405 in the `{"error","detail"}` shape.

    A path served with (or without) a trailing slash is a 307 to that path, with a JSON body. A 404 names the
    path with only the route's literal segments (`/webhooks/postalytics/…`): never a token from it.
    """
    status = exc.status_code
    code = _ROUTING_CODES.get(status, "http_error")
    if status == 404:
        path = request.scope["path"]
        twin = _slash_twin(request)
        if twin is not None:
            query = request.scope.get("query_string", b"").decode("latin-1")
            location = str(request.base_url).rstrip("/") + quote(twin) + (f"?{query}" if query else "")
            return error_response(307, "trailing_slash", "this resource is served at the path "
                                  f"{'without' if len(twin) < len(path) else 'with'} the trailing slash "
                                  "(see Location)", {"Location": location})
        literals = _route_literals(request.app) | KNOWN_SOURCES_SET
        detail = f"no route for {request.method} {safe_path(path, literals)}"
    else:
        detail = str(exc.detail or code)
    return error_response(status, code, detail, dict(exc.headers or {}))
