"""The console's operator pages: deliveries (failures, dead letters, replay, pause / resume) and follow-ups.

Every action is a form POST with the session's CSRF token, needs an `operate` token, runs the same store
function as the JSON API and the CLI, and redirects back to the page with its result in `?done=` / `?failed=`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from postrelay.receiver.api import common, operations
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.ui.app import Console, page
from postrelay.receiver.ui.session import Session

Form = dict[str, list[str]]


def _back(console: Console, form: Form, default: str, **result: str) -> RedirectResponse:
    """Redirect to the page the form came from (a console path only), with the action's result."""
    target = (form.get("back") or [""])[0]
    if not target.startswith(console.prefix + "/") or target.startswith("//"):
        target = console.url(default)
    base, _, query = target.partition("?")
    keep = "&".join(p for p in query.split("&") if p and not p.startswith(("done=", "failed=")))
    extra = urlencode({k: v for k, v in result.items() if v})
    return RedirectResponse(base + "?" + "&".join(p for p in (keep, extra) if p), status_code=303)


@page()
async def deliveries(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/deliveries?destination=&error=&since=&status=&cursor="""
    rc, params = console.receiver, request.query_params
    destination, error = params.get("destination", ""), params.get("error", "")[:200]
    status = params.get("status") or "retrying"
    if status not in ("retrying", "pending"):
        status = "retrying"
    since, limit = common.since_of(params, rc.clock()), common.limit_of(params)
    dead, dead_next = await operations.dead_letters(rc, destination, error, since, params.get("cursor") or None, limit)
    waiting, _ = await operations.in_flight(rc, destination, status, None, limit)
    report = await operations.destination_report(rc)
    query = {"destination": destination, "error": error, "since": params.get("since", ""), "status": status}
    return console.render(request, "deliveries.html", active="deliveries", dead=dead, dead_next=dead_next,
                          waiting=waiting, report=report, query=query, back=str(request.url.path) + (
                              "?" + request.url.query if request.url.query else ""))


@page(role="operate", post=True)
async def replay(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """POST {prefix}/deliveries/replay: `ids` (one or the selected) or `destination` (all of it)."""
    one = [i for i in form.get("one", []) if i][:1]  # a row's own Replay button: just that one
    ids = one or [i for i in form.get("ids", []) if i][:1000]
    destination = (form.get("destination") or [""])[0]
    if not ids and not destination:
        return _back(console, form, "deliveries", failed="Select at least one dead letter to replay.")
    try:
        result = await operations.replay(console.receiver, ids=ids or None, destination=None if ids else destination)
    except HTTPError as exc:
        return _back(console, form, "deliveries", failed=exc.detail)
    text = f"Replayed {result['replayed']} dead letter(s)"
    if result["skipped_done"]:
        text += f"; {result['skipped_done']} had been delivered meanwhile"
    if result["not_found"]:
        text += f"; {len(result['not_found'])} were no longer dead letters"
    return _back(console, form, "deliveries", done=text + ".")


@page(role="operate", post=True)
async def pause_or_resume(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """POST {prefix}/destinations/{name}/pause and …/resume"""
    name, action = request.path_params["name"], request.url.path.rsplit("/", 1)[1]
    try:
        if action == "pause":
            await operations.pause(console.receiver, name)
            text = f"Paused {name}: its deliveries wait until it is resumed."
        else:
            result: dict[str, Any] = await operations.resume(console.receiver, name)
            text = f"Resumed {name}: {result['requeued']} parked delivery(ies) are due now."
    except HTTPError as exc:
        return _back(console, form, "deliveries", failed=exc.detail)
    return _back(console, form, "deliveries", done=text)


@page()
async def followups(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """GET {prefix}/followups?rule=&cursor="""
    params = request.query_params
    rule = params.get("rule", "")
    items, nxt = await operations.pending_followups(console.receiver, rule, params.get("cursor") or None,
                                                    common.limit_of(params))
    rules = [r.name for r in console.config.followups]
    return console.render(request, "followups.html", active="followups", items=items, next_cursor=nxt, rule=rule,
                          rules=rules, back=str(request.url.path) + ("?" + request.url.query if request.url.query
                                                                     else ""))


@page(role="operate", post=True)
async def cancel(console: Console, request: Request, sess: Session, form: Form) -> Response:
    """POST {prefix}/followups/cancel: `id`"""
    fid = (form.get("id") or [""])[0]
    if fid and await operations.cancel_followup(console.receiver, fid, sess.principal.name):
        return _back(console, form, "followups", done=f"Cancelled {fid}.")
    return _back(console, form, "followups", failed=f"No pending follow-up {fid!r} (fired or cancelled already?).")


def routes() -> list[Route]:
    """The operator pages' routes (inside the console's mount)."""
    return [
        Route("/deliveries", deliveries, methods=["GET"]),
        Route("/deliveries/replay", replay, methods=["POST"]),
        Route("/destinations/{name}/pause", pause_or_resume, methods=["POST"]),
        Route("/destinations/{name}/resume", pause_or_resume, methods=["POST"]),
        Route("/followups", followups, methods=["GET"]),
        Route("/followups/cancel", cancel, methods=["POST"]),
    ]
