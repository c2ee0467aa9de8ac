"""`GET /v1/campaigns`, `GET /v1/campaigns/{campaign_id}` (the funnel) and its `mailpieces.csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from postrelay.core import keys
from postrelay.core.stores import catalog
from postrelay.receiver.api import common
from postrelay.receiver.errors import HTTPError

CSV_COLUMNS = ["source", "id", "kind", "country", "stage", "stage_at", "first_event_at", "name", "email"]
_CSV_PAGE = 500


async def campaign_or_404(request: Request, campaign_id: str) -> dict[str, Any]:
    """The campaign's funnel; 404 `campaign_not_found` if no piece ever named it."""
    found = await catalog.campaign(common.stores(request), campaign_id)
    if found is None:
        raise HTTPError(404, "campaign_not_found", f"no mailpiece of campaign {campaign_id!r} is known")
    return found


@common.guarded
async def list_campaigns(request: Request) -> JSONResponse:
    """GET /v1/campaigns?cursor=&limit="""
    common.authorize(request)
    params = request.query_params
    rows, nxt = await catalog.campaigns(common.stores(request), params.get("cursor") or None, common.limit_of(params))
    return JSONResponse({"campaigns": rows, "next_cursor": nxt})


@common.guarded
async def get_campaign(request: Request) -> JSONResponse:
    """GET /v1/campaigns/{campaign_id}"""
    common.authorize(request)
    return JSONResponse(await campaign_or_404(request, request.path_params["campaign_id"]))


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def csv_rows(request: Request, campaign_id: str) -> AsyncIterator[str]:
    """The CSV text of a campaign's pieces, newest first, a page at a time."""
    st = common.stores(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    cursor: str | None = None
    while True:
        members, cursor = await catalog.page(st.queue, keys.index_set("camp", campaign_id), cursor, _CSV_PAGE)
        out.seek(0)
        out.truncate()
        for row in await catalog.summaries(st, [m for m, _ in members]):
            writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
        yield out.getvalue()
        if cursor is None:
            return


@common.guarded
async def campaign_csv(request: Request) -> StreamingResponse:
    """GET /v1/campaigns/{campaign_id}/mailpieces.csv"""
    common.authorize(request)
    campaign_id = request.path_params["campaign_id"]
    await campaign_or_404(request, campaign_id)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in campaign_id)[:80] or "campaign"
    return StreamingResponse(csv_rows(request, campaign_id), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{safe}-mailpieces.csv"'})
