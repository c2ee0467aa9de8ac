"""`GET /v1/mailpieces` (search) and `GET /v1/mailpieces/{source}/{mailpiece_id}` (one piece, everything known)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from postrelay.core.config import KNOWN_SOURCES
from postrelay.core.stores import catalog
from postrelay.core.stores.links import LINK_SOURCE
from postrelay.core.timeline import read_piece
from postrelay.receiver.api import common, operations
from postrelay.receiver.errors import HTTPError


async def search(request: Request, params: Any) -> dict[str, Any]:
    """The search answer for query parameters `params` (the console's Mailpieces page uses it too)."""
    rc = common.receiver_of(request)
    f = common.filters_of(params, rc.clock())
    items, nxt = await catalog.search(common.stores(request), f, params.get("cursor") or None, common.limit_of(params))
    return {"mailpieces": items, "next_cursor": nxt}


async def detail(request: Request, source: str, piece_id: str) -> dict[str, Any]:
    """A piece's stage, attributes, timeline, deliveries and follow-ups; 404 `mailpiece_not_found` if unknown."""
    st = common.stores(request)
    readable = (*KNOWN_SOURCES, LINK_SOURCE)  # `links`: a tracking link's own timeline, while not bound
    if source not in readable:  # source names hold no `:`, so `{source:id}` keys cannot be ambiguous
        raise HTTPError(404, "unknown_source", f"unknown source {source[:40]!r}; known: {', '.join(readable)}")
    piece = await read_piece(st.pieces, source, piece_id)
    if piece is None:
        raise HTTPError(404, "mailpiece_not_found", f"no events for mailpiece {piece_id!r} from {source!r}")
    rows = await catalog.summaries(st, [f"{source}:{piece_id}"])
    summary = rows[0] if rows else {}
    piece["campaign"] = summary.get("campaign")
    piece["recipient"] = {"name": summary.get("name"), "email": summary.get("email")}
    piece["deliveries"], piece["followups"] = await operations.piece_activity(common.receiver_of(request), piece)
    return piece


@common.guarded
async def list_mailpieces(request: Request) -> JSONResponse:
    """GET /v1/mailpieces?q=&email=&campaign=&stage=&source=&since=&cursor=&limit="""
    common.authorize(request)
    return JSONResponse(await search(request, request.query_params))


@common.guarded
async def get_mailpiece(request: Request) -> JSONResponse:
    """GET /v1/mailpieces/{source}/{mailpiece_id}"""
    common.authorize(request)
    return JSONResponse(await detail(request, request.path_params["source"], request.path_params["mailpiece_id"]))
