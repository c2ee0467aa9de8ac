"""The tracking-link part of the OpenAPI document (`receiver.openapi` merges it in)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_TOKEN = {"name": "token", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,43}$"}}
_AUTH = [{"bearerAuth": []}]
_RETRY = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}},
                                                    "application/json": {"schema": _ERROR}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


_SPEC = {"type": "object", "required": ["target_url"], "additionalProperties": False, "properties": {
    "target_url": {"type": "string", "description": "http(s) URL on a host of `[links] allowed_hosts`"},
    "campaign_id": {"type": ["string", "null"]},
    "ref": {"type": ["string", "null"], "description": "your key (e.g. a CRM contact id); binds the link to the "
                                                      "piece whose metadata carries the same `ref`"},
    "mailpiece": {"type": ["object", "null"], "required": ["source", "id"],
                  "properties": {"source": {"type": "string"}, "id": {"type": "string"}}},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
    "utm": {"type": "object", "additionalProperties": {"type": "string"},
            "description": "source, medium, campaign, term, content: appended as utm_*"},
    "query": {"type": "object", "additionalProperties": {"type": "string"}},
    "goal_url": {"type": ["string", "null"], "description": "where /t/{token}/goal redirects (else a 1x1 pixel)"},
}}
_MINTED = {"type": "object", "required": ["token", "url", "qr_svg_url", "qr_png_url"], "properties": {
    "token": {"type": "string"}, "url": {"type": "string"}, "qr_svg_url": {"type": "string"},
    "qr_png_url": {"type": "string"}}}
_LINK = {"type": "object", "required": ["token", "url", "target_url", "status"], "properties": {
    **_MINTED["properties"], "target_url": {"type": "string"}, "goal_url": {"type": ["string", "null"]},
    "goal": {"enum": ["redirect", "pixel"]}, "campaign_id": {"type": ["string", "null"]},
    "ref": {"type": ["string", "null"]}, "mailpiece": {"type": ["object", "null"]},
    "status": {"enum": ["active", "expired", "revoked"]}, "created_at": {"type": ["string", "null"]},
    "expires_at": {"type": ["string", "null"]}, "revoked_at": {"type": ["string", "null"]}}}
_UNAVAILABLE = {**_error("Redis is unreachable"), "headers": _RETRY}
_COMMON = {"401": _error("missing or invalid bearer token"), "403": _error("the token's role is too low"),
           "503": _UNAVAILABLE}


def _visit(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "tags": ["links"], "parameters": [_TOKEN], "responses": {
        **ok, "404": _page("unknown or malformed token (one answer for both)"),
        "410": _page("expired or revoked (without `[links] fallback_url`)"),
        "503": {**_page("Redis is down and this process never read the link"), "headers": _RETRY}}}


_REDIRECT = {"302": {"description": "to the stored target; the visit is recorded (a person) or not (HEAD, prefetch, "
                                    "scanner)", "headers": {"Location": {"schema": {"type": "string"}}}}}


def paths() -> dict[str, Any]:
    """The link endpoints."""
    qr_params = [_TOKEN, {"name": "kind", "in": "path", "required": True, "schema": {"enum": ["svg", "png"]}},
                 {"name": "size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 40},
                  "description": "pixels per module (default 4 for SVG, 10 for PNG)"},
                 {"name": "margin", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 16},
                  "description": "quiet zone in modules (default 4)"},
                 {"name": "error", "in": "query", "schema": {"enum": ["L", "M", "Q", "H"]},
                  "description": "error-correction level (default M)"}]
    return {
        "/v1/links": {"post": {
            "summary": "Mint a tracking link", "tags": ["links"], "security": _AUTH,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _SPEC}}},
            "responses": {"201": {"description": "minted", "content": {"application/json": {"schema": _MINTED}}},
                          "400": _error("invalid body or a target that is not allowed (the detail names the field)"),
                          "404": _error("`[links]` is not configured"), "408": _error("body timeout"),
                          "413": _error("body too large"), **_COMMON}}},
        "/v1/links/batch": {"post": {
            "summary": "Mint up to 10,000 links, all or nothing", "tags": ["links"], "security": _AUTH,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["links"], "properties": {"links": {"type": "array", "items": _SPEC}}}}}},
            "responses": {"200": {"description": "minted, in request order", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"links": {"type": "array", "items": _MINTED}}}}}},
                          "400": _error("an invalid item (`links[i].field`), none or too many"),
                          "404": _error("`[links]` is not configured"), "408": _error("body timeout"),
                          "413": _error("body too large"), **_COMMON}}},
        "/v1/links/{token}": {
            "get": {"summary": "A link and its status", "tags": ["links"], "security": _AUTH, "parameters": [_TOKEN],
                    "responses": {"200": {"description": "the link", "content": {"application/json": {
                        "schema": _LINK}}}, "404": _error("no such link"), **_COMMON}},
            "delete": {"summary": "Revoke a link", "tags": ["links"], "security": _AUTH, "parameters": [_TOKEN],
                       "responses": {"200": {"description": "revoked", "content": {"application/json": {
                           "schema": _LINK}}}, "404": _error("no such link"), **_COMMON}}},
        "/v1/links/{token}/goal": {"post": {
            "summary": "Record a conversion (purl_completed), server to server", "tags": ["links"], "security": _AUTH,
            "parameters": [_TOKEN],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"id": {"type": ["string", "integer"]}, "metadata": {"type": "object"}}}}}},
            "responses": {"200": {"description": "recorded (or a duplicate of the same `id`)", "content": {
                "application/json": {"schema": {"type": "object", "required": ["accepted", "duplicates"], "properties": {
                    "accepted": {"type": "integer"}, "duplicates": {"type": "integer"}}}}}},
                          "400": _error("invalid body"), "404": _error("no such link"),
                          "408": _error("body timeout"), "410": _error("expired or revoked"),
                          "413": _error("body too large"), **_COMMON}}},
        "/v1/links/{token}/qr.{kind}": {"get": {
            "summary": "The link's QR code (no token needed: printing services fetch it)", "tags": ["links"],
            "parameters": qr_params,
            "responses": {"200": {"description": "the image", "content": {"image/svg+xml": {"schema": {"type": "string"}},
                                                                        "image/png": {"schema": {"type": "string"}}}},
                          "400": _error("a bad size, margin or error level"), "404": _error("no such link"),
                          "503": _UNAVAILABLE}}},
        "/t/{token}": {"get": _visit("A link visit: redirect, recording purl_opened", _REDIRECT)},
        "/t/{token}/goal": {"get": _visit("A goal visit: redirect or 1x1 GIF, recording purl_completed", {
            **_REDIRECT, "200": {"description": "the 1x1 pixel", "content": {"image/gif": {"schema": {"type": "string"}}}}})},
    }
