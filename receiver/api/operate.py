"""Deliveries, dead letters, destinations and follow-ups: `GET` to look (read token), `POST`/`DELETE` to act
(operate token). The CLI's `dlq`, `destinations` and `followups` commands run the same store functions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from postrelay.receiver.api import common, operations
from postrelay.receiver.body import receive_body
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.providers.base import parse_json

STATUSES = ("retrying", "pending", "dead")


async def _json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object (empty: `{}`): the webhooks' body reader and parser, so `[server]
    max_body_bytes`, `body_timeout` and every malformed body (too deep, `NaN`, bad UTF-8) get their 4xx."""
    rc = common.receiver_of(request)
    body = await receive_body(request.receive, request.headers.get("content-length"),
                              rc.config.server.max_body_bytes, rc.body_deadlines)
    if not body.strip():
        return {}
    data = parse_json(body)
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid_body", "the body must be a JSON object")
    return data


@common.guarded
async def list_deliveries(request: Request) -> JSONResponse:
    """GET /v1/deliveries?destination=&status=retrying|pending|dead&cursor=&limit="""
    common.authorize(request)
    rc, params = common.receiver_of(request), request.query_params
    status = params.get("status") or "retrying"
    if status not in STATUSES:
        raise HTTPError(400, "invalid_query", f"status must be one of {', '.join(STATUSES)}")
    destination, limit, cursor = params.get("destination", ""), common.limit_of(params), params.get("cursor") or None
    if status == "dead":
        items, nxt = await operations.dead_letters(rc, destination, "", None, cursor, limit)
    else:
        items, nxt = await operations.in_flight(rc, destination, status, cursor, limit)
    return JSONResponse({"deliveries": items, "next_cursor": nxt})


@common.guarded
async def list_dlq(request: Request) -> JSONResponse:
    """GET /v1/dlq?destination=&error=&since=&cursor=&limit="""
    common.authorize(request)
    rc, params = common.receiver_of(request), request.query_params
    items, nxt = await operations.dead_letters(rc, params.get("destination", ""), params.get("error", "")[:200],
                                               common.since_of(params, rc.clock()), params.get("cursor") or None,
                                               common.limit_of(params))
    return JSONResponse({"dead_letters": items, "next_cursor": nxt})


@common.guarded
async def replay_one(request: Request) -> JSONResponse:
    """POST /v1/dlq/{entry_id}/replay"""
    common.authorize(request, "operate")
    entry_id = request.path_params["entry_id"]
    result = await operations.replay(common.receiver_of(request), ids=[entry_id])
    if result["not_found"]:
        raise HTTPError(404, "dead_letter_not_found", f"no dead letter {entry_id!r}")
    return JSONResponse(result)


@common.guarded
async def replay_many(request: Request) -> JSONResponse:
    """POST /v1/dlq/replay {"destination": name} | {"ids": [entry id, …]}"""
    common.authorize(request, "operate")
    body = await _json_body(request)
    ids, destination = body.get("ids"), body.get("destination")
    if (ids is None) == (destination is None):
        raise HTTPError(400, "invalid_body", 'send either {"destination": name} or {"ids": [entry id, ...]}')
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000):
        raise HTTPError(400, "invalid_body", "ids must be a list of at most 1000 entry ids (strings)")
    if destination is not None and not isinstance(destination, str):
        raise HTTPError(400, "invalid_body", "destination must be a destination name")
    return JSONResponse(await operations.replay(common.receiver_of(request), ids=ids, destination=destination))


@common.guarded
async def pause(request: Request) -> JSONResponse:
    """POST /v1/destinations/{name}/pause"""
    common.authorize(request, "operate")
    return JSONResponse(await operations.pause(common.receiver_of(request), request.path_params["name"]))


@common.guarded
async def resume(request: Request) -> JSONResponse:
    """POST /v1/destinations/{name}/resume"""
    common.authorize(request, "operate")
    return JSONResponse(await operations.resume(common.receiver_of(request), request.path_params["name"]))


@common.guarded
async def list_followups(request: Request) -> JSONResponse:
    """GET /v1/followups?rule=&cursor=&limit="""
    common.authorize(request)
    params = request.query_params
    items, nxt = await operations.pending_followups(common.receiver_of(request), params.get("rule", ""),
                                                    params.get("cursor") or None, common.limit_of(params))
    return JSONResponse({"followups": items, "next_cursor": nxt})


@common.guarded
async def cancel_followup(request: Request) -> JSONResponse:
    """DELETE /v1/followups/{followup_id}"""
    principal = common.authorize(request, "operate")
    fid = request.path_params["followup_id"]
    if not await operations.cancel_followup(common.receiver_of(request), fid, principal.name):
        raise HTTPError(404, "followup_not_found", f"no pending follow-up {fid!r}")
    return JSONResponse({"cancelled": fid})
