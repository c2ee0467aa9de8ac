"""The OpenAPI paths and schemas of `/v1/mailings` and `/v1/triggers/{name}` (merged by `receiver.openapi`)."""

from __future__ import annotations

from typing import Any

from postrelay.core.mailing import STATUSES, MailingRequest

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_UNAVAILABLE = {**_error("Redis is unreachable: nothing was stored, retry"), "headers": _RETRY_AFTER}
_BODY_ERRORS = {"408": _error("the body was not received within `[server] body_timeout`"),
                "413": _error("the body exceeds `[server] max_body_bytes`")}


def paths() -> dict[str, Any]:
    """The mailing and trigger operations."""
    return {
        "/v1/mailings": {
            "post": {
                "summary": "Mail a postcard or letter through a postgrid or lob destination", "tags": ["mailings"],
                "security": [{"bearerAuth": []}],
                "description": "Needs an `operate` token. The same `Idempotency-Key` always answers the same mailing "
                               "and never creates a second piece (docs/mailings.md).",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                                "description": "1-255 printable ASCII characters, reused when retrying",
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/MailingRequest"}}}},
                "responses": {
                    "202": _json("MailingAccepted", "stored; a worker creates the piece (or the key's earlier mailing)"),
                    "400": _error("invalid body, unknown provider, missing template/sender, missing Idempotency-Key, "
                                  "`link` without `[links]` (`links_not_configured`) or with a caller-given `purl`/"
                                  "`qr_url` merge variable (`merge_variable_conflict`)"),
                    "401": _error("no or invalid bearer token"), "403": _error("the token's role is `read`"),
                    "409": _error("the Idempotency-Key was used for another request"),
                    **_BODY_ERRORS, "503": _UNAVAILABLE,
                },
            },
            "get": {
                "summary": "Mailings, newest first", "tags": ["mailings"], "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": "status", "in": "query", "required": False, "schema": {"type": "string", "enum": list(STATUSES)}},
                    {"name": "provider", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "trigger", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "`next_cursor` of the previous page"},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
                "responses": {
                    "200": {"description": "the mailings", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["mailings", "next_cursor"],
                        "properties": {"mailings": {"type": "array", "items": {"$ref": "#/components/schemas/Mailing"}},
                                       "next_cursor": {"type": ["string", "null"]}}}}}},
                    "400": _error("bad status, limit or cursor"), "401": _error("no or invalid bearer token"),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/v1/mailings/{mailing_id}": {"get": {
            "summary": "One mailing: status, provider piece id, reason, the piece's stage", "tags": ["mailings"],
            "security": [{"bearerAuth": []}],
            "parameters": [{"name": "mailing_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json("Mailing", "the mailing"), "401": _error("no or invalid bearer token"),
                          "404": _error("no such mailing"), "503": _UNAVAILABLE},
        }},
        "/v1/triggers/{name}": {"post": {
            "summary": "A `[[triggers]]` rule: turn this JSON into a mailing", "tags": ["mailings"],
            "description": "Authenticated by the trigger's token (`Authorization: Bearer` or `X-Trigger-Token`) or "
                           "a Standard Webhooks signature with one of its `secrets`.",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "X-Trigger-Token", "in": "header", "required": False, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": _json("TriggerSkipped", "not mailed: the `where` filter did not match, or the recipient is "
                             "cooling down"),
                "202": _json("MailingAccepted", "stored (or this payload's idempotency key already made it)"),
                "400": _error("not a JSON object, or the mapping does not make a valid mailing"),
                "401": _error("missing or wrong token or signature"), "404": _error("no trigger with that name"),
                **_BODY_ERRORS, "503": _UNAVAILABLE,
            },
        }},
    }


def schemas() -> dict[str, Any]:
    """Component schemas (the request model's from pydantic)."""
    request = MailingRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    defs = request.pop("$defs", {})
    nullable = {"type": ["string", "null"]}
    return {
        **defs, "MailingRequest": request,
        "MailingAccepted": {"type": "object", "required": ["mailing_id", "status"], "properties": {
            "mailing_id": {"type": "string"}, "status": {"enum": list(STATUSES)}, "replayed": {"type": "boolean"},
            "dry_run": {"type": "boolean"}}},
        "TriggerSkipped": {"type": "object", "required": ["status", "reason"], "properties": {
            "mailing_id": {"type": "null"}, "status": {"enum": ["ignored", "skipped"]},
            "reason": {"enum": ["where", "cooldown"]}, "previous_mailing_id": {"type": "string"}}},
        "Mailing": {"type": "object", "required": ["mailing_id", "status", "provider", "kind", "request"], "properties": {
            "mailing_id": {"type": "string"}, "status": {"enum": list(STATUSES)}, "provider": {"type": "string"},
            "provider_type": nullable, "kind": {"type": "string"}, "piece_id": nullable, "stage": nullable,
            "reason": nullable, "http_status": {"type": ["integer", "null"]}, "attempts": {"type": "integer"},
            "dry_run": {"type": "boolean"}, "origin": {"type": "string"}, "trigger": nullable,
            "created_at": {"type": "string"}, "updated_at": {"type": "string"}, "next_attempt_at": nullable,
            "last_error": nullable, "request": {"type": "object"}, "rendered": {"type": "object"},
            "link": {"type": ["object", "null"], "description": "the tracking link minted for the piece",
                     "properties": {k: {"type": "string"} for k in ("token", "url", "qr_svg_url", "qr_png_url")}}}},
    }
