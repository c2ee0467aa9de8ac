"""The receiver's OpenAPI 3.1 document, served at `GET /openapi.json`.

Written by hand (the routes are few and their auth is per provider). `tests/security/test_schemathesis.py`
runs Schemathesis against a live receiver with it: every documented status and body is checked, and
undocumented ones (a 500 above all) fail the test.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from postrelay.core.events import RANK, EventType
from postrelay.receiver import openapi_links
from postrelay.receiver.api.openapi_mailings import paths as mailing_paths
from postrelay.receiver.api.openapi_mailings import schemas as mailing_schemas

_TYPES = [t.value for t in EventType]  # every canonical type, new ones included (e.g. informed_delivery_*)
_STAGES = [t.value for t in EventType if t in RANK]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
_INGEST_ERRORS = {
    "400": _error("the body is not a valid event (syntax, UTF-8, nesting, fields), or a bad Content-Length"),
    "401": _error("signature, token or timestamp rejected"),
    "404": _error("the source is not configured on this receiver"),
    "408": _error("the body was not received within `[server] body_timeout`"),
    "413": _error("the body exceeds `[server] max_body_bytes`"),
    "503": {**_error("Redis is unreachable, full (noeviction) or loading: nothing was accepted, retry"),
            "headers": _RETRY_AFTER},
}
_ACCEPTED = {"description": "stored in Redis (durable per its AOF policy) and queued for the workers",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}}}


def _header(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string"}}


def _webhook(summary: str, description: str, headers: list[dict[str, Any]], content: dict[str, Any],
             extra_params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "description": description, "tags": ["webhooks"],
        "parameters": [*(extra_params or []), *headers],
        "requestBody": {"required": True, "content": content},
        "responses": {"200": _ACCEPTED, **_INGEST_ERRORS},
    }}


_JSON_BODY = {"application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}}}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call), with the console API's paths (`receiver.api`)."""
    from postrelay.receiver.api import openapi_paths

    doc = _document()
    doc["paths"].update(openapi_paths.paths())
    doc["components"]["schemas"].update(openapi_paths.schemas())
    mailpiece = doc["paths"]["/v1/mailpieces/{source}/{mailpiece_id}"]["get"]
    mailpiece["responses"]["400"] = _error("a bad parameter")
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "postrelay receiver", "version": "0.1.0",
                 "description": "Mail-event webhooks in (PostGrid, Lob, Postalytics, Standard Webhooks), a mailpiece "
                                "read API out. Every error is `{\"error\": code, \"detail\": text}`; a webhook "
                                "answered 200 is stored and will be processed (see README.md (Guarantees))."},
        "paths": {
            "/webhooks/postgrid": _webhook(
                "PostGrid webhook",
                "The default `jwt` format posts an HS256 JWT (the event in its claims); the `json` format posts "
                "the event with `PostGrid-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, t.body)>`.",
                [_header("PostGrid-Signature", "`t=<timestamp>,v1=<hex>` (json format only)")],
                {"application/jwt": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}},
                 **_JSON_BODY}),
            "/webhooks/lob": _webhook(
                "Lob webhook", "`Lob-Signature` = hex HMAC-SHA256(secret, timestamp + '.' + raw body).",
                [_header("Lob-Signature", "hex HMAC-SHA256", True),
                 _header("Lob-Signature-Timestamp", "seconds or milliseconds since the epoch", True)],
                _JSON_BODY),
            "/webhooks/generic": _webhook(
                "Standard Webhooks sender", "A canonical event (or a list) signed with Standard Webhooks headers: "
                "`webhook-id`, `webhook-timestamp`, `webhook-signature`, or the spec's alternative names `svix-id`, "
                "`svix-timestamp`, `svix-signature` (one complete set is required).",
                [_header("webhook-id", "stable across retries: the dedupe key"),
                 _header("webhook-timestamp", "seconds since the epoch"),
                 _header("webhook-signature", "`v1,<base64 HMAC-SHA256>`, space-separated for rotation"),
                 _header("svix-id", "alternative name of `webhook-id`"),
                 _header("svix-timestamp", "alternative name of `webhook-timestamp`"),
                 _header("svix-signature", "alternative name of `webhook-signature`")],
                _JSON_BODY),
            "/webhooks/postalytics/{token}": _webhook(
                "Postalytics webhook", "Authenticated by the unguessable token in the path (Postalytics signs nothing).",
                [], _JSON_BODY,
                [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}]),
            "/v1/mailpieces/{source}/{mailpiece_id}": {"get": {
                "summary": "A mailpiece's stage and timeline", "tags": ["read API"],
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": "source", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "`postgrid`, `lob`, `postalytics` or `generic`"},
                    {"name": "mailpiece_id", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "the provider's piece id (may contain `:` and `/`; never control characters)"},
                ],
                "responses": {
                    "200": {"description": "the piece",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Mailpiece"}}}},
                    "401": _error("no `Authorization: Bearer <api_token>`, a wrong token, or the read API is off "
                                  "(a token in the query string is never accepted)"),
                    "404": _error("`unknown_source` (not one of the four sources) or `mailpiece_not_found` "
                                  "(no events for that piece)"),
                    "503": {**_error("Redis is unreachable"), "headers": _RETRY_AFTER},
                },
            }},
            "/healthz": {"get": {"summary": "Liveness: the process answers", "tags": ["operations"],
                                 "responses": {"200": {"description": "up", "content": {"application/json": {
                                     "schema": {"type": "object", "required": ["status"],
                                                "properties": {"status": {"const": "ok"}}}}}}}}},
            "/readyz": {"get": {
                "summary": "Readiness: Redis answers (and, unless `check=redis`, a worker heartbeat is fresh)",
                "tags": ["operations"],
                "parameters": [{"name": "check", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["all", "redis"], "default": "all"}}],
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Readiness"}}}},
                    "400": _error("unknown `check`"),
                    "503": {"description": "not ready; `failed` names the checks", "headers": _RETRY_AFTER,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}},
                },
            }},
            "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["operations"],
                                 "responses": {"200": {"description": "Prometheus text exposition format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            **mailing_paths(),
            "/openapi.json": {"get": {"summary": "This document", "tags": ["operations"],
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {"application/json": {
                                                                "schema": {"type": "object"}}}}}}},
            **openapi_links.paths(),
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "`[server] api_token` (role operate) or a "
                                                              "`[[server.tokens]]` token (read or operate)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"], "additionalProperties": False,
                          "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
                "IngestResult": {
                    "type": "object", "required": ["accepted", "duplicates", "ignored"], "additionalProperties": False,
                    "properties": {"accepted": {"type": "integer", "minimum": 0},
                                   "duplicates": {"type": "integer", "minimum": 0},
                                   "ignored": {"type": "integer", "minimum": 0}}},
                "Readiness": {"type": "object", "required": ["status"],
                              "properties": {"status": {"enum": ["ready", "unavailable"]},
                                             "redis": {"type": "string"}, "worker": {"type": "string"},
                                             "pieces": {"type": "string", "description": "the mailpiece store, "
                                                        "when `queue_url` names another Redis (a Redis Cluster)"},
                                             "failed": {"type": "array", "items": {"type": "string"}}}},
                **mailing_schemas(),
                "Mailpiece": {
                    "type": "object", "required": ["source", "id", "stage", "events", "deliveries", "followups"],
                    "properties": {"source": {"type": "string"}, "id": {"type": "string"},
                                   "campaign": {"type": ["string", "null"]},
                                   "recipient": {"type": "object", "properties": {
                                       "name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]}}},
                                   "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"},
                                                  "description": "every delivery of its events, per destination"},
                                   "followups": {"type": "array", "items": {"type": "object"},
                                                 "description": "follow-ups pending, fired or cancelled"},
                                   "kind": {"type": ["string", "null"]}, "country": {"type": ["string", "null"]},
                                   "stage": {"enum": [*_STAGES, None]}, "stage_at": {"type": ["string", "null"]},
                                   "events": {"type": "array", "items": {
                                       "type": "object", "required": ["id", "type", "mailpiece"],
                                       "properties": {"type": {"enum": _TYPES},
                                                      "stage": {"enum": [*_STAGES, None]}}}}}},
            },
        },
    }


async def openapi_json(request: Request) -> JSONResponse:
    """GET /openapi.json."""
    return JSONResponse(document())
