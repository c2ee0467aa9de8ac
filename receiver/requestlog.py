"""The request log line and the route label of `postrelay_http_requests_total` (written by `receiver.edge`).

Handlers add fields to the line through `request_info(request)` (the webhook handler adds `source`,
`accepted`, `duplicates`, `ignored`, `event_ids`, `mailpiece_ids` or `error`). The path is logged with its
token replaced (Postalytics, tracking links: `postrelay.core.redaction.redact_path`), and the metric's `path`
label is the route template (bounded cardinality, no token): `/webhooks/postgrid`, `/webhooks/postalytics/{token}`,
`/v1/mailpieces/{source}/{mailpiece_id}`, ...
Probes (`/healthz`, `/readyz`, `/metrics`) log at DEBUG unless they fail.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from postrelay.core.config import KNOWN_SOURCES
from postrelay.core.logs import log_fields
from postrelay.core.redaction import redact_path

log = logging.getLogger("postrelay.http")
INFO_KEY = "postrelay.request_info"
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


def request_info(request: Request) -> dict[str, Any]:
    """The dict whose items end up in this request's log line."""
    return request.scope.setdefault(INFO_KEY, {})


def route_label(scope: Scope) -> str:
    """The `path` label: the matched route's template (a known webhook source spelled out)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return "<unmatched>"
    if template == "/webhooks/{source}":
        source = scope.get("path_params", {}).get("source")
        return f"/webhooks/{source}" if source in KNOWN_SOURCES else template
    return template.replace(":path}", "}")


def log_request(method: str | None, path: str, label: str, status: int, started: float, info: dict[str, Any]) -> None:
    """The request's log line: WARNING for 5xx, DEBUG for probes, INFO otherwise (see `postrelay.core.logs.log_fields`)."""
    if status >= 500:
        level = logging.WARNING
    elif label in QUIET:
        level = logging.DEBUG
    else:
        level = logging.INFO
    if log.isEnabledFor(level):
        log_fields(log, level, "request", {
            "method": method, "path": redact_path(path), "route": label, "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2), **info})
