"""Shared helpers for the follow-up action adapters: payload data, dedupe keys, safe templates."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from adapters.base import DeliveryContext, Outcome, redact
from postrelay.events import CanonicalEvent
from postrelay.filters import lookup

FOLLOWUP_KEYS = ("followup", "trigger_event_id", "estimated", "late", "scheduled_for", "fired_at")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\}")


"""A vendor base URL setting (http/https), stored without its trailing slash."""


def followup_fields(event: CanonicalEvent, ctx: DeliveryContext) -> dict[str, Any]:
    """The follow-up facts every action payload carries (`estimated` and `late` always present)."""
    extra = ctx.extra
    return {
        "followup": extra.get("followup"),
        "trigger_event_id": extra.get("trigger_event_id") or event.id,
        "estimated": bool(extra.get("estimated", event.estimated)),
        "late": bool(extra.get("late", False)),
        "scheduled_for": extra.get("scheduled_for"),
        "fired_at": extra.get("fired_at"),
    }


def action_data(event: CanonicalEvent, ctx: DeliveryContext) -> dict[str, Any]:
    """The serialized event (public JSON contract) plus the follow-up facts at the top level."""
    data = event.model_dump(mode="json")
    data["event_id"] = event.id
    data.update(followup_fields(event, ctx))
    return data


def dedupe_key(event: CanonicalEvent, ctx: DeliveryContext) -> str:
    """Deterministic key for one action on one trigger: `<trigger event id>:<rule or destination>`."""
    trigger = ctx.extra.get("trigger_event_id") or event.id
    return f"{trigger}:{ctx.extra.get('followup') or ctx.destination}"


def default_name(event: CanonicalEvent, ctx: DeliveryContext) -> str:
    """Event/metric name: the follow-up rule's name, else "Mail <Event Type>" (e.g. "Mail Delivered")."""
    rule = ctx.extra.get("followup")
    return str(rule) if rule else f"Mail {event.type.value.replace('_', ' ').title()}"


def event_time(event: CanonicalEvent, ctx: DeliveryContext) -> datetime:
    """When the action "happened": the follow-up's firing time if known, else the event's own time."""
    fired = ctx.extra.get("fired_at")
    if isinstance(fired, datetime):
        return fired
    if isinstance(fired, str) and fired:
        try:
            return datetime.fromisoformat(fired.replace("Z", "+00:00"))
        except ValueError:
            pass
    return event.occurred_at


def ulid_for(key: str, when: datetime) -> str:
    """A deterministic ULID: 48-bit ms timestamp of `when` + 80 bits of sha256(`key`)."""
    millis = max(0, int(when.timestamp() * 1000)) & ((1 << 48) - 1)
    rand = int.from_bytes(hashlib.sha256(key.encode()).digest()[:10], "big")
    value = (millis << 80) | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def render(template: str, data: dict[str, Any]) -> str:
    """Fill `{dotted.path}` placeholders from `data`; unknown or non-scalar -> empty; `{{`/`}}` -> braces."""

    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        value = lookup(data, m.group(1))
        if value is None or isinstance(value, dict | list):
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _PLACEHOLDER.sub(one, template)


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """'Jane Q Public' -> ('Jane', 'Q Public'); a single word is a first name."""
    parts = (name or "").split()
    if not parts:
        return None, None
    return parts[0], " ".join(parts[1:]) or None


def e164(phone: str | None, country: str | None = None) -> str | None:
    """Best-effort E.164: keep `+digits`; 10 NANP digits (US/CA or unknown) -> +1...; else None."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if phone.strip().startswith("+"):
        return f"+{digits}" if 8 <= len(digits) <= 15 else None
    nanp = (country or "US").strip().upper() in {"US", "USA", "CA", "CAN"}
    if nanp and len(digits) == 10:
        return f"+1{digits}"
    if nanp and len(digits) == 11 and digits.startswith("1"):
        return f"+{digits}"
    return None


def scrub(outcome: Outcome, secrets: list[str]) -> Outcome:
    """Redact secrets from an outcome's detail (in place) and return it."""
    outcome.detail = redact(outcome.detail, secrets)
    return outcome
