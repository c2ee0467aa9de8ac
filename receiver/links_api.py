"""The tracking-link JSON API and QR images.

- `POST /v1/links` (operate) → `201 {"token", "url", "qr_svg_url", "qr_png_url"}`;
- `POST /v1/links/batch` (operate) `{"links": [...]}` (up to `[links] max_batch`, 10,000) → `{"links": [...]}`
  in request order; all or nothing (a bad item is a 400 naming `links[i].field`);
- `GET /v1/links/{token}` (read) → the link and its status; `DELETE /v1/links/{token}` (operate) revokes it;
- `POST /v1/links/{token}/goal` (operate; the user's shop, server to server) records `purl_completed`; an
  optional `{"id": …}` makes retries of one conversion count once;
- `GET /v1/links/{token}/qr.svg` and `qr.png`: the link's URL as a QR code (`segno`), `?size=` (pixels per
  module), `?margin=` (quiet zone, modules), `?error=L|M|Q|H`. No token: printing services fetch them from
  merge variables (Lob and PostGrid HTML templates), and an image tells nothing the printed URL does not.
"""

from __future__ import annotations

import io
import secrets
from datetime import UTC, datetime
from typing import Any

import redis.exceptions
import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from postrelay.core.events import EventType
from postrelay.core.stores import links as store
from postrelay.receiver.body import receive_body
from postrelay.receiver.errors import HTTPError, bad_request
from postrelay.receiver.providers.base import parse_json

BATCH_BODY_LIMIT = 16 * 1024 * 1024
QR_ERRORS = ("L", "M", "Q", "H")
REDIS_FAILURES = (redis.exceptions.RedisError, OSError)


class LinksAPI:
    """Handlers bound to one `Receiver` (its config, queue Redis, clock, auth and ingest queue)."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.config = receiver.config.links

    def _enabled(self) -> None:
        if not self.config.enabled:
            raise HTTPError(404, "links_not_configured", "tracking links need [links] base_url and allowed_hosts")

    async def _json(self, request: Request, limit: int | None = None) -> Any:
        server = self.receiver.config.server
        body = await receive_body(request.receive, request.headers.get("content-length"),
                                  limit or server.max_body_bytes, self.receiver.body_deadlines)
        return parse_json(body) if body.strip() else None

    def _unavailable(self, exc: Exception) -> HTTPError:
        return self.receiver._unavailable(exc)

    async def mint(self, request: Request) -> JSONResponse:
        """POST /v1/links."""
        self.receiver._check_token(request, "operate")
        self._enabled()
        spec = _spec(await self._json(request), "")
        return JSONResponse((await self._mint([spec], ""))[0], status_code=201)

    async def mint_batch(self, request: Request) -> JSONResponse:
        """POST /v1/links/batch."""
        self.receiver._check_token(request, "operate")
        self._enabled()
        data = await self._json(request, max(BATCH_BODY_LIMIT, self.receiver.config.server.max_body_bytes))
        items = data.get("links") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise bad_request("invalid_link", 'send {"links": [ {"target_url": …}, … ]} with at least one link')
        if len(items) > self.config.max_batch:
            raise bad_request("too_many_links", f"at most {self.config.max_batch} links per batch (got {len(items)})")
        specs = [_spec(item, f"links[{i}].") for i, item in enumerate(items)]
        return JSONResponse({"links": await self._mint(specs, "links")})

    async def _mint(self, specs: list[store.LinkSpec], where: str) -> list[dict[str, str]]:
        try:
            return await store.amint_many(self.receiver.redis, self.config, specs, self.receiver.clock(), where)
        except store.LinkError as exc:
            raise bad_request("invalid_link", str(exc)) from None
        except REDIS_FAILURES as exc:
            raise self._unavailable(exc) from None

    async def _link(self, token: str) -> store.Link:
        try:
            link = await store.aread(self.receiver.redis, token)
        except REDIS_FAILURES as exc:
            raise self._unavailable(exc) from None
        if link is None:
            raise HTTPError(404, "link_not_found", "no such link")
        return link

    async def show(self, request: Request) -> JSONResponse:
        """GET /v1/links/{token}."""
        self.receiver._check_token(request, "read")
        link = await self._link(request.path_params["token"])
        return JSONResponse(store.public(self.config, link, self.receiver.clock()))

    async def revoke(self, request: Request) -> JSONResponse:
        """DELETE /v1/links/{token}: the link answers its fallback (or a small page) from now on."""
        self.receiver._check_token(request, "operate")
        token = request.path_params["token"]
        try:
            link = await store.arevoke(self.receiver.redis, token, self.receiver.clock())
        except REDIS_FAILURES as exc:
            raise self._unavailable(exc) from None
        if link is None:
            raise HTTPError(404, "link_not_found", "no such link")
        visits = getattr(request.app.state, "link_visits", None)
        if visits is not None:
            visits.forget(token)
        return JSONResponse(store.public(self.config, link, self.receiver.clock()))

    async def goal(self, request: Request) -> JSONResponse:
        """POST /v1/links/{token}/goal: a conversion reported by the user's server."""
        self.receiver._check_token(request, "operate")
        token = request.path_params["token"]
        data = await self._json(request)
        if data is not None and not isinstance(data, dict):
            raise bad_request("invalid_goal", 'the body is optional; if sent, a JSON object {"id", "metadata"}')
        data = data or {}
        conversion, extra = data.get("id"), data.get("metadata", {})
        if conversion is not None and (not isinstance(conversion, str | int) or not 0 < len(str(conversion)) <= 200):
            raise bad_request("invalid_goal", "id: a string or number of 1 to 200 characters")
        if not isinstance(extra, dict):
            raise bad_request("invalid_goal", "metadata: must be a JSON object")
        link = await self._link(token)
        now = self.receiver.clock()
        if link.status(now) != "active":
            raise HTTPError(410, "link_gone", f"the link is {link.status(now)}")
        visit_id = f"{token}.goal.{'id:' + str(conversion) if conversion is not None else secrets.token_hex(8)}"
        detail = {"goal": extra, "via": "api"} if extra else {"via": "api"}
        event = store.visit_event(link, EventType.PURL_COMPLETED, datetime.fromtimestamp(now, UTC), visit_id, detail)
        try:
            accepted, duplicates = await self.receiver.queue.enqueue([event])
        except REDIS_FAILURES as exc:
            raise self._unavailable(exc) from None
        return JSONResponse({"accepted": accepted, "duplicates": duplicates})

    async def qr(self, request: Request) -> Response:
        """GET /v1/links/{token}/qr.svg and qr.png."""
        token, kind = request.path_params["token"], request.path_params["kind"]
        if kind not in ("svg", "png"):
            raise HTTPError(404, "not_found", "QR codes are qr.svg and qr.png")
        q = request.query_params
        size = _int_param(q.get("size"), "size", 10 if kind == "png" else 4, 1, 40)
        margin = _int_param(q.get("margin"), "margin", 4, 0, 16)
        error = (q.get("error") or "M").upper()
        if error not in QR_ERRORS:
            raise bad_request("invalid_parameter", "error: one of L, M, Q, H (error-correction level)")
        link = await self._link(token)
        code = segno.make(store.urls(self.config, link.token)["url"], error=error, micro=False, boost_error=False)
        out = io.BytesIO()
        if kind == "svg":
            code.save(out, kind="svg", scale=size, border=margin, xmldecl=False)
            media = "image/svg+xml"
        else:
            code.save(out, kind="png", scale=size, border=margin)
            media = "image/png"
        return Response(out.getvalue(), media_type=media, headers={"Cache-Control": "public, max-age=86400"})


def _spec(data: Any, where: str) -> store.LinkSpec:
    try:
        return store.parse_spec(data, where)
    except store.LinkError as exc:
        raise bad_request("invalid_link", str(exc)) from None


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise bad_request("invalid_parameter", f"{name}: an integer from {low} to {high}")
    return value
