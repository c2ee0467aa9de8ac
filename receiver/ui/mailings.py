"""The console's Mailings pages: the list (filters by status, provider, trigger; newest first; paged with the
API's cursors) and one mailing (status, provider, piece, the provider request with secrets as `***`, the
metadata written into the piece, the tracking link, the failure reason). Both need a `read` session."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from postrelay.core.mailing import MAILER_TYPES, STATUSES, provider_metadata, stored_request
from postrelay.receiver.api.mailings import Mailings
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.ui.app import Console, page
from postrelay.receiver.ui.session import Session

MAILING_ID = re.compile(r"^ml_[0-9a-f]{26}$")
PAGE_SIZE = "25"
Form = dict[str, list[str]]


def api(request: Request) -> Mailings:
    """The receiver's mailing handlers (shared with `/v1/mailings`)."""
    found: Mailings = request.app.state.mailings
    return found


def mailing_of(events: list[dict[str, Any]]) -> str | None:
    """The mailing that created a piece, from the `postrelay_mailing` key its events carry (None: not ours)."""
    for event in events:
        metadata = event.get("metadata")
        mid = metadata.get("postrelay_mailing") if isinstance(metadata, dict) else None
        if isinstance(mid, str) and MAILING_ID.match(mid):
            return mid
    return None


@page()
async def mailings(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/mailings?status=&provider=&trigger=&cursor=&limit="""
    params = request.query_params
    query = {k: params.get(k, "") for k in ("status", "provider", "trigger")}
    handlers = api(request)
    found, nxt = await handlers.page({"limit": PAGE_SIZE, **params})
    rows = [handlers.redacted(row) for row in found]
    providers = sorted(n for n, d in console.config.destinations.items() if d.type in MAILER_TYPES)
    return console.render(request, "mailings.html", active="mailings", rows=rows, next_cursor=nxt, query=query,
                          statuses=STATUSES, providers=providers, triggers=[t.name for t in console.config.triggers])


@page()
async def mailing(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/mailings/{mailing_id}"""
    mid = request.path_params["mailing_id"]
    handlers = api(request)
    view = await handlers.view(mid)
    if view is None:
        raise HTTPError(404, "mailing_not_found", f"No mailing {mid!r} (unknown, or older than [mailings] retention).")
    shown = handlers.shown_request(view)
    try:
        metadata = provider_metadata(stored_request(view["request"]), mid)
    except ValueError:
        metadata = dict(view["request"].get("metadata") or {})
    if view.get("link"):
        metadata["postrelay_link"] = view["link"]["token"]
    return console.render(request, "mailing.html", active="mailings", m=view, metadata=metadata,
                          shown=shown if isinstance(shown, dict) else None,
                          unshown=shown if isinstance(shown, str) else None)
