"""Error answers: always `{"error": "<code>", "detail": "<what was wrong>"}`, never a traceback."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


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


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Render an HTTPError."""
    assert isinstance(exc, HTTPError)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


async def starlette_http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Render Starlette's own 404/405 in the same JSON shape."""
    status = getattr(exc, "status_code", 500)
    code = _STARLETTE_CODES.get(status, "http_error")
    detail = getattr(exc, "detail", "") or code
    if status == 404:
        detail = f"no route for {request.method} {request.url.path}"
    return error_response(status, code, str(detail), getattr(exc, "headers", None))


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Last resort: a 500 with no internals in the body (the traceback goes to the log only).

    `Connection: close` because Starlette re-raises after this answer and uvicorn then drops the connection:
    a client that reused it for its retry would get a connection reset instead of an answer.
    """
    return error_response(500, "internal_error", "unexpected error; the event was not accepted, retry later",
                          {"Connection": "close"})
