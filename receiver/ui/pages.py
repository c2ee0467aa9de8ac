"""The console's reading pages: overview, mailpieces (search and one piece), campaigns (list and funnel)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from postrelay.core.events import RANK, TERMINAL, EventType
from postrelay.core.stores import catalog
from postrelay.receiver.api import campaigns as campaigns_api
from postrelay.receiver.api import common
from postrelay.receiver.api import mailpieces as mailpieces_api
from postrelay.receiver.ui import charts
from postrelay.receiver.ui import overview as overview_data
from postrelay.receiver.ui.app import Console, page
from postrelay.receiver.ui.mailings import mailing_of
from postrelay.receiver.ui.session import Session

PROGRESS = [EventType.CREATED, EventType.PRINTED, EventType.MAILED, EventType.IN_TRANSIT, EventType.IN_LOCAL_AREA,
            EventType.PROCESSED_FOR_DELIVERY, EventType.DELIVERED]
STAGES = [t.value for t in sorted(RANK, key=RANK.__getitem__)]
Form = dict[str, list[str]]


@page()
async def overview(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/"""
    data = await overview_data.gather(console.receiver)
    minutes = data["events_per_minute"]
    chart = charts.lines(minutes["labels"], minutes["series"], every=max(1, len(minutes["labels"]) // 8),
                         scale=overview_data.BUCKET)
    return console.render(request, "overview.html", active="overview", data=data, chart=chart)


@page()
async def mailpieces(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/mailpieces?q=&email=&campaign=&stage=&source=&since=&cursor="""
    params = request.query_params
    found = await mailpieces_api.search(request, params)
    query = {k: params.get(k, "") for k in ("q", "email", "campaign", "stage", "source", "since")}
    return console.render(request, "mailpieces.html", active="mailpieces", found=found, query=query, stages=STAGES,
                          sources=common.stores(request).sources)


def _progress(events: list[dict[str, Any]], stage: str | None) -> dict[str, Any]:
    """The progress line: which steps the piece reached, the current one, and a terminal outcome if any."""
    ranks = [RANK.get(EventType(e["type"]), 0) for e in events if EventType(e["type"]) not in TERMINAL]
    types = {e["type"] for e in events}
    reached = max([*ranks, RANK[EventType.MAILED] if EventType.RETURNED_TO_SENDER.value in types else 0, 0])
    steps = [{"name": t.value, "done": RANK[t] <= reached, "current": t.value == stage} for t in PROGRESS]
    outcome = stage if stage and EventType(stage) in TERMINAL else None
    return {"steps": steps, "outcome": outcome}


@page()
async def mailpiece(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/mailpieces/{source}/{mailpiece_id}"""
    piece = await mailpieces_api.detail(request, request.path_params["source"], request.path_params["mailpiece_id"])
    events = piece["events"]
    engagement = [e for e in events if e["type"] in catalog.ENGAGEMENT]
    return console.render(request, "mailpiece.html", active="mailpieces", piece=piece, events=events,
                          progress=_progress(events, piece["stage"]), engagement=engagement,
                          mailing_id=mailing_of(events))


@page()
async def campaigns(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/campaigns"""
    params = request.query_params
    rows, nxt = await catalog.campaigns(common.stores(request), params.get("cursor") or None, common.limit_of(params))
    return console.render(request, "campaigns.html", active="campaigns", rows=rows, next_cursor=nxt)


def _arrivals_chart(arrivals: dict[str, dict[str, int]]) -> dict[str, Any] | None:
    """Stage arrivals per day as lines (mailed, processed for delivery, delivered, returned, visits)."""
    shown = [s for s in ("mailed", "in_transit", "processed_for_delivery", "delivered", "returned_to_sender",
                         "purl_opened") if s in arrivals]
    days = sorted({d for s in shown for d in arrivals[s]})
    if not days:
        return None
    first, last = (datetime.fromisoformat(d).replace(tzinfo=UTC) for d in (days[0], days[-1]))
    span = min(120, (last - first).days + 1)
    labels = [(first.fromordinal(first.toordinal() + i)).strftime("%Y-%m-%d") for i in range(span)]
    series = {s.replace("_", " "): [float(arrivals[s].get(d, 0)) for d in labels] for s in shown}
    return charts.lines([d[5:] for d in labels], series, every=max(1, span // 10))


@page()
async def campaign(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/campaigns/{campaign_id}"""
    found = await campaigns_api.campaign_or_404(request, request.path_params["campaign_id"])
    funnel = charts.bars([(s.replace("_", " "), n) for s, n in found["funnel"].items()])
    return console.render(request, "campaign.html", active="campaigns", c=found, funnel=funnel,
                          arrivals=_arrivals_chart(found["arrivals"]))


@page()
async def campaign_csv(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/campaigns/{campaign_id}/mailpieces.csv: the same CSV as the API's."""
    campaign_id = request.path_params["campaign_id"]
    await campaigns_api.campaign_or_404(request, campaign_id)
    return StreamingResponse(campaigns_api.csv_rows(request, campaign_id), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="mailpieces.csv"'})
