"""The OpenAPI paths and schemas of the JSON API (`receiver.api`), merged into `receiver.openapi.document`."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_CURSOR = _q("cursor", "`next_cursor` of the previous page")
_LIMIT = _q("limit", "items per page (default 50)", {"type": "integer", "minimum": 1, "maximum": 500})
_SINCE = _q("since", "an ISO date/time or a duration ago (`2h`, `3d`)")
_NEXT = {"type": ["string", "null"], "description": "cursor of the next page; null on the last one"}


def _responses(ok: dict[str, Any], *, role: str = "read", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"200": ok, "400": _error("a bad parameter or cursor"),
           "401": _error("no `Authorization: Bearer <token>`, or an unknown token")}
    if role == "operate":
        out["403"] = _error("the token has role `read`; this needs `operate`")
    out.update(extra or {})
    out["503"] = {**_error("Redis is unreachable"), "headers": _RETRY_AFTER}
    return out


def _op(method: str, summary: str, ok: dict[str, Any], params: list[dict[str, Any]], *, role: str = "read",
        extra: dict[str, Any] | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": ["console API"], "security": [{"bearerAuth": []}],
                          "parameters": params, "responses": _responses(ok, role=role, extra=extra)}
    if body is not None:
        op["requestBody"] = body
        op["responses"]["413"] = _error("the body is larger than 1 MiB")
    return {method: op}


def _list(name: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [name, "next_cursor"],
            "properties": {name: {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                           "next_cursor": _NEXT}}


_NOT_FOUND = {"404": _error("not found")}


def paths() -> dict[str, Any]:
    """The `/v1/…` paths of the console API (the mailpiece detail is documented with the read API)."""
    return {
        "/ui": {"get": {"summary": "The web console (HTML pages under `/ui/`, `[ui] prefix`; see docs/console.md)",
                        "tags": ["console"], "responses": {"307": {
                            "description": "to the console's overview (or its sign-in page)",
                            "headers": {"Location": {"schema": {"type": "string"}}}}}}},
        "/v1/mailpieces": _op("get", "Search mailpieces (newest first)", _ok("a page", _list("mailpieces",
                              "MailpieceSummary")), [
            _q("q", "a provider mailpiece id, an email, or the words of a recipient name"),
            _q("email", "recipient email (any case)"), _q("campaign", "campaign id"),
            _q("stage", "current stage (a canonical type)"), _q("source", "postgrid, lob, postalytics, generic"),
            _SINCE, _CURSOR, _LIMIT]),
        "/v1/campaigns": _op("get", "Campaigns, latest activity first", _ok("a page", _list("campaigns",
                             "CampaignSummary")), [_CURSOR, _LIMIT]),
        "/v1/campaigns/{campaign_id}": _op("get", "A campaign's funnel, outcomes, engagement and arrivals",
                                           _ok("the campaign", {"$ref": "#/components/schemas/Campaign"}),
                                           [_path("campaign_id")], extra=_NOT_FOUND),
        "/v1/campaigns/{campaign_id}/mailpieces.csv": _op(
            "get", "The campaign's pieces as CSV", {"description": "CSV, one row per piece", "content": {
                "text/csv": {"schema": {"type": "string"}}}}, [_path("campaign_id")], extra=_NOT_FOUND),
        "/v1/deliveries": _op("get", "Deliveries waiting (retrying, pending) or dead", _ok("a page", _list(
            "deliveries", "Delivery")), [_q("destination", "destination name"), _q(
                "status", "retrying (default), pending or dead", {"type": "string",
                                                                   "enum": ["retrying", "pending", "dead"]}),
            _CURSOR, _LIMIT]),
        "/v1/dlq": _op("get", "Dead letters, newest first", _ok("a page", _list("dead_letters", "DeadLetter")), [
            _q("destination", "destination name"), _q("error", "text the reason contains"), _SINCE, _CURSOR,
            _LIMIT]),
        "/v1/dlq/{entry_id}/replay": _op("post", "Replay one dead letter", _ok("replayed", {
            "$ref": "#/components/schemas/ReplayResult"}), [_path("entry_id")], role="operate", extra=_NOT_FOUND),
        "/v1/dlq/replay": _op("post", "Replay dead letters by id, or every one of a destination", _ok("counts", {
            "$ref": "#/components/schemas/ReplayResult"}), [], role="operate", extra=_NOT_FOUND, body={
            "required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"destination": {"type": "string"},
                                                 "ids": {"type": "array", "items": {"type": "string"}}}}}}}),
        "/v1/destinations/{name}/pause": _op("post", "Pause a destination (its deliveries wait, parked)", _ok(
            "paused", {"$ref": "#/components/schemas/DestinationState"}), [_path("name")], role="operate",
            extra=_NOT_FOUND),
        "/v1/destinations/{name}/resume": _op("post", "Resume a destination (parked deliveries due now)", _ok(
            "resumed", {"$ref": "#/components/schemas/DestinationState"}), [_path("name")], role="operate",
            extra=_NOT_FOUND),
        "/v1/followups": _op("get", "Pending follow-ups, soonest due first", _ok("a page", _list(
            "followups", "Followup")), [_q("rule", "rule name"), _CURSOR, _LIMIT]),
        "/v1/followups/{followup_id}": _op("delete", "Cancel a pending follow-up", _ok("cancelled", {
            "type": "object", "required": ["cancelled"], "properties": {"cancelled": {"type": "string"}}}),
            [_path("followup_id")], role="operate", extra=_NOT_FOUND),
    }


_STR = {"type": ["string", "null"]}
_INT = {"type": "integer", "minimum": 0}


def schemas() -> dict[str, Any]:
    """Component schemas of the console API."""
    return {
        "MailpieceSummary": {"type": "object", "required": ["source", "id", "stage"], "properties": {
            "source": {"type": "string"}, "id": {"type": "string"}, "kind": _STR, "country": _STR, "stage": _STR,
            "stage_at": _STR, "campaign": _STR, "name": _STR, "email": _STR, "first_event_at": _STR}},
        "CampaignSummary": {"type": "object", "required": ["id", "pieces"], "properties": {
            "id": {"type": "string"}, "pieces": _INT, "mailed": _INT, "delivered": _INT, "returned": _INT,
            "last_event_at": {"type": "string"}}},
        "Campaign": {"type": "object", "required": ["id", "pieces", "funnel", "outcomes", "engagement", "rates"],
                     "properties": {
            "id": {"type": "string"}, "pieces": _INT, "last_event_at": {"type": "string"},
            "funnel": {"type": "object", "additionalProperties": _INT,
                       "description": "pieces that reached each lifecycle stage (a later stage implies the earlier)"},
            "outcomes": {"type": "object", "additionalProperties": _INT}, "engagement": {
                "type": "object", "additionalProperties": _INT},
            "rates": {"type": "object", "additionalProperties": {"type": ["number", "null"]},
                      "description": "shares of the pieces mailed"},
            "arrivals": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": _INT}},
            "median_days_mailed_to_processed": {"type": ["number", "null"]},
            "transit_histogram": {"type": "object", "additionalProperties": _INT}}},
        "Delivery": {"type": "object", "required": ["key", "destination", "state"], "properties": {
            "key": {"type": "string"}, "destination": {"type": "string"}, "event_id": {"type": "string"},
            "tag": _STR, "state": {"type": "string"}, "attempts": {"type": "array", "items": {"type": "object"}},
            "due": _STR, "outcome": _STR, "event_type": _STR, "mailpiece": {"type": "object"}}},
        "DeadLetter": {"type": "object", "required": ["key", "destination", "reason"], "properties": {
            "key": {"type": "string"}, "destination": {"type": "string"}, "event_id": {"type": "string"},
            "reason": {"type": "string"}, "dead_at": {"type": "string"},
            "attempts": {"type": "array", "items": {"type": "object"}}, "event": {"type": ["object", "null"]}}},
        "ReplayResult": {"type": "object", "required": ["replayed", "skipped_done", "not_found"], "properties": {
            "replayed": _INT, "skipped_done": _INT, "not_found": {"type": "array", "items": {"type": "string"}}}},
        "DestinationState": {"type": "object", "required": ["destination", "paused"], "properties": {
            "destination": {"type": "string"}, "paused": {"type": "boolean"}, "requeued": _INT}},
        "Followup": {"type": "object", "required": ["id", "rule", "do", "due"], "properties": {
            "id": {"type": "string"}, "rule": {"type": "string"}, "do": {"type": "string"}, "due": {"type": "string"},
            "estimated": {"type": "boolean"}, "trigger": {"type": "string"}, "mailpiece": {"type": "object"}}},
    }
