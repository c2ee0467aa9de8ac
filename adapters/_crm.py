"""Helpers shared by the CRM and webhook adapters: field values, activity text, settings checks.

Every CRM adapter writes the same canonical fields (under names the destination's settings choose) and logs
the same human-readable activity text, so a mail event reads alike in HubSpot, Pipedrive and Salesforce.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

import httpx

from postrelay.adapters.base import Outcome, excerpt
from postrelay.core.events import CanonicalEvent, EventType, rank_of

FIELDS = ("last_event", "stage", "event_at", "campaign", "mailpiece_id", "tracking_number")
"""Canonical fields a CRM field mapping may name (mapping keys)."""

LABELS: dict[EventType, str] = {
    EventType.CREATED: "Mail piece created",
    EventType.ADDRESSED: "Mail piece addressed",
    EventType.PRINTED: "Mail piece printed",
    EventType.MAILED: "Mail piece mailed",
    EventType.IN_TRANSIT: "Mail in transit",
    EventType.IN_LOCAL_AREA: "Mail in local area",
    EventType.PROCESSED_FOR_DELIVERY: "Mail out for delivery",
    EventType.DELIVERED: "Mail delivered",
    EventType.RE_ROUTED: "Mail re-routed",
    EventType.RETURNED_TO_SENDER: "Mail returned to sender",
    EventType.CANCELLED: "Mail piece cancelled",
    EventType.FAILED: "Mail piece failed",
    EventType.PURL_OPENED: "pURL opened",
    EventType.PURL_COMPLETED: "pURL completed",
    EventType.INFORMED_DELIVERY_SENT: "USPS Informed Delivery email sent",
    EventType.INFORMED_DELIVERY_OPENED: "USPS Informed Delivery email opened",
    EventType.INFORMED_DELIVERY_CLICKED: "USPS Informed Delivery email clicked",
}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and `Z` (accepted by HubSpot and Salesforce datetime fields)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_late(event: CanonicalEvent) -> bool:
    """True for a lifecycle event that arrived after the piece had already moved past it."""
    return event.stage is not None and 0 < rank_of(event.type) < rank_of(event.stage)


def field_values(event: CanonicalEvent) -> dict[str, str]:
    """Canonical field -> value for the CRM record; fields without a value are left out.

    `stage` is the piece's furthest stage (computed by the worker), never `event.type`, so it never moves
    backwards. `last_event` and `event_at` describe this event and are left out when it arrived late, so an
    old event never overwrites a newer one.
    """
    late = is_late(event)
    campaign = event.mailpiece.campaign_id or event.metadata.get("campaign")
    values = {
        "last_event": None if late else event.type.value,
        "stage": event.stage.value if event.stage else None,
        "event_at": None if late else timestamp(event.occurred_at),
        "campaign": campaign,
        "mailpiece_id": event.mailpiece.id,
        "tracking_number": event.mailpiece.tracking_number,
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def mapped(mapping: dict[str, str], event: CanonicalEvent) -> dict[str, str]:
    """The event's field values under the CRM names of `mapping` (canonical field -> CRM field)."""
    values = field_values(event)
    return {crm_name: values[key] for key, crm_name in mapping.items() if key in values}


def summary(event: CanonicalEvent) -> str:
    """One line: what happened to which piece, e.g. `Mail delivered (estimated): letter ltr_123`."""
    label = LABELS[event.type] + (" (estimated)" if event.estimated else "")
    return f"{label}: {event.mailpiece.kind or 'mail piece'} {event.mailpiece.id}"


def details(event: CanonicalEvent) -> list[str]:
    """The activity text as lines: the summary, then the facts a CRM user needs."""
    facts = [
        ("Occurred at", timestamp(event.occurred_at)),
        ("Stage", event.stage.value if event.stage else None),
        ("Campaign", event.mailpiece.campaign_id or event.metadata.get("campaign")),
        ("Tracking number", event.mailpiece.tracking_number),
        ("Scan ZIP", event.location.zip),
        ("Source", f"{event.source} event {event.source_event_id}"),
        ("postrelay event", event.id),
    ]
    return [summary(event)] + [f"{name}: {value}" for name, value in facts if value]


def plain_text(event: CanonicalEvent) -> str:
    """The activity text with newlines (Salesforce descriptions)."""
    return "\n".join(details(event))


def html_text(event: CanonicalEvent) -> str:
    """The activity text as escaped HTML lines (HubSpot and Pipedrive render note bodies as HTML)."""
    return "<br>".join(html.escape(line) for line in details(event))


def dig(response: httpx.Response, *keys: str) -> str | None:
    """The value at `keys` of a JSON object response as a string, or None (not JSON, missing, null)."""
    try:
        value: Any = response.json()
    except ValueError:
        return None
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return None if value is None or isinstance(value, dict | list) else str(value)


def missing_id(response: httpx.Response, what: str) -> Outcome:
    """A 2xx answer without the id we need: the vendor broke its contract, so do not retry blindly."""
    return Outcome.permanent(f"{what}: answer has no id ({excerpt(response)})", http_status=response.status_code)


def check_mapping(value: dict[str, str]) -> dict[str, str]:
    """Settings validator: canonical field -> CRM field name, both known and well-formed."""
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown canonical field(s) {unknown}; known: {list(FIELDS)}")
    bad = [name for name in value.values() if not _NAME.match(name)]
    if bad:
        raise ValueError(f"invalid CRM field name(s) {bad}")
    return value


def check_name(value: str | None) -> str | None:
    """Settings validator: an API field name (letters, digits, underscores), safe inside a URL path."""
    if value is not None and not _NAME.match(value):
        raise ValueError(f"invalid field name {value!r}")
    return value
