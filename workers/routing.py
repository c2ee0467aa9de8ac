"""Matching canonical events to `[[routes]]`: event types plus optional `where` filters.

A filter names one of `postrelay.core.events.FILTER_FIELDS` (checked at config load); piece attributes the event lacks
(country, kind, campaign, mailing class, recipient) are read from the piece (`CanonicalEvent.field`).
"""

from __future__ import annotations

from typing import Any

from postrelay.core.config import RouteConfig
from postrelay.core.events import CanonicalEvent
from postrelay.core.filters import matches_value as _matches_value


def matches(event: CanonicalEvent, events: list[str], where: dict[str, Any]) -> bool:
    """True when the event's type is listed (or `*`) and every `where` path has the expected value."""
    if "*" not in events and event.type.value not in events:
        return False
    return all(_matches_value(event.field(path), expected) for path, expected in where.items())


def destinations_for(event: CanonicalEvent, routes: list[RouteConfig]) -> list[str]:
    """Destination names for an event, each once, in route order."""
    out: list[str] = []
    for route in routes:
        if matches(event, route.events, route.where):
            out.extend(d for d in route.to if d not in out)
    return out
