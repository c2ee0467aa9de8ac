"""Shared helpers for the follow-up action adapters: payload data, dedupe keys, safe templates."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import phonenumbers

from postrelay.adapters.base import DeliveryContext, Outcome
from postrelay.core.events import CanonicalEvent
from postrelay.core.filters import lookup
from postrelay.core.redaction import MASK, redact

FOLLOWUP_KEYS = ("followup", "trigger_event_id", "estimated", "late", "scheduled_for", "fired_at")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\}")



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


def render_fields(fields: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Dotted field paths (`to.name`, `link.utm.source`) -> templates, rendered from `data` into a nested dict;
    non-string values are kept, an empty render leaves its field out. ValueError names a path that
    conflicts with another (`to` and `to.name`)."""
    out: dict[str, Any] = {}
    for target, template in fields.items():
        value = render(template, data) if isinstance(template, str) else template
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        node = out
        *parents, leaf = target.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{target!r} conflicts with another mapped field")
        node[leaf] = value
    return out


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """'Jane Q Public' -> ('Jane', 'Q Public'); a single word is a first name."""
    parts = (name or "").split()
    if not parts:
        return None, None
    return parts[0], " ".join(parts[1:]) or None


def e164(phone: str | None, country: str | None = None) -> str | None:
    """`phone` as a real E.164 number (`+15551230000`), or None when it is not a valid number.

    Parsed and checked with `phonenumbers` (Google's libphonenumber metadata): a number written with `+` is
    read as international; a national one (`(617) 555-0123`) is read in `country` (an ISO alpha-2 code,
    US when unknown). Numbers that cannot exist (a 555 area code, too few digits, an unassigned range) are
    None rather than a string a vendor would reject.
    """
    if not phone or not phone.strip():
        return None
    region = (country or "US").strip().upper()
    try:
        number = phonenumbers.parse(phone, region if len(region) == 2 else "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def idempotency_key(event: CanonicalEvent, ctx: DeliveryContext) -> str:
    """The `Idempotency-Key` header for creating one order per follow-up: `postrelay-` + sha256 of the
    dedupe key (hex, 32 chars). Deterministic, so a retried or re-run create is the same request to the
    vendor; ASCII and 42 characters whatever the rule name holds (PostGrid and Lob accept it)."""
    return "postrelay-" + hashlib.sha256(dedupe_key(event, ctx).encode()).hexdigest()[:32]


def scrub(outcome: Outcome, secrets: Iterable[str]) -> Outcome:
    """Redact secrets from an outcome's detail (in place, `***`: `postrelay.core.redaction`) and return it."""
    outcome.detail = redact(outcome.detail, secrets, mask=MASK)
    return outcome
