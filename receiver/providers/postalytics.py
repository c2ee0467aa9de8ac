"""Postalytics per-campaign webhooks, authenticated by an unguessable token in the URL path.

`eventType` comes as an integer (not in lifecycle order) or as a status-code name (`ReturnedToSender`, or
Postalytics' own wording such as "Return to Sender"); both are accepted. The body has four sections: basic
information, the recipient `to` (older spellings `recipient`, `contact`, `address` and top-level fields are
fallbacks), a campaign/drop section and `meta.fields`. Their key casing is unconfirmed (Postalytics' sample is an
image), so fields are looked up case-, space- and underscore-insensitively.

Postalytics sends no event id: the dedupe key is (mailId, eventType, eventDate). An event without `eventDate` is
deduplicated on a SHA-256 of its raw body (minus `retryAttempts`, which changes between retries), so a retry of
it is still a duplicate; its `occurred_at` is the arrival time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from postrelay.core.config import PostalyticsSource
from postrelay.core.events import CanonicalEvent, EventType, Mailpiece, Recipient
from postrelay.receiver.errors import bad_request, unauthorized
from postrelay.receiver.providers.base import (
    Normalized,
    country_code,
    normalize_each,
    opt_str,
    parse_json,
    parse_time,
)

NAME = "postalytics"
BY_NUMBER: dict[int, EventType] = {
    0: EventType.CREATED,
    9: EventType.ADDRESSED,
    10: EventType.PRINTED,
    11: EventType.MAILED,
    4: EventType.IN_TRANSIT,
    5: EventType.IN_LOCAL_AREA,
    6: EventType.PROCESSED_FOR_DELIVERY,
    2: EventType.RE_ROUTED,
    3: EventType.RETURNED_TO_SENDER,
    7: EventType.PURL_OPENED,
    8: EventType.PURL_COMPLETED,
}
BY_NAME: dict[str, EventType | None] = {
    "mailpiececreated": EventType.CREATED,
    "created": EventType.CREATED,
    "addressed": EventType.ADDRESSED,
    "printed": EventType.PRINTED,
    "mailed": EventType.MAILED,
    "intransit": EventType.IN_TRANSIT,
    "inlocalarea": EventType.IN_LOCAL_AREA,
    "processedfordelivery": EventType.PROCESSED_FOR_DELIVERY,
    "rerouted": EventType.RE_ROUTED,
    "returnedtosender": EventType.RETURNED_TO_SENDER,
    "returntosender": EventType.RETURNED_TO_SENDER,  # Postalytics' own wording: "Return to Sender"
    "purlopened": EventType.PURL_OPENED,
    "purlcompleted": EventType.PURL_COMPLETED,
    "error": EventType.FAILED,
    "none": None,
}


def verify(body: bytes, token: str, settings: PostalyticsSource) -> Any:
    """Compare the path token with every configured token in constant time, then parse the body."""
    ok = False
    for expected in settings.all_tokens:
        ok |= hmac.compare_digest(expected.encode(), token.encode())
    if not ok:
        raise unauthorized("invalid_token", "the Postalytics webhook token in the URL is not valid")
    return parse_json(body)


def _key(name: str) -> str:
    """`ProcessedForDelivery`, `processed_for_delivery` and `Processed For Delivery` all look the same."""
    return name.replace("_", "").replace("-", "").replace(" ", "").lower()


def _get(obj: dict[str, Any], *names: str) -> Any:
    """First present value among `names`, matching keys case- and underscore-insensitively."""
    index = {_key(k): v for k, v in obj.items()}
    for name in names:
        value = index.get(_key(name))
        if value not in (None, ""):
            return value
    return None


def _section(obj: dict[str, Any], *names: str) -> dict[str, Any]:
    value = _get(obj, *names)
    return value if isinstance(value, dict) else {}


def event_type(raw: Any) -> EventType | None:
    """Canonical type for an integer, a digit string or a status-code name; None when it carries no tracking."""
    if isinstance(raw, bool):
        raise bad_request("invalid_payload", "eventType must be an integer or a status name")
    if isinstance(raw, int):
        return BY_NUMBER.get(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if text.lstrip("-").isascii() and text.lstrip("-").isdigit():  # not "¹": isdigit() but int() fails
            return BY_NUMBER.get(int(text))
        return BY_NAME.get(_key(text))
    raise bad_request("invalid_payload", "eventType (or status) is missing")


def meta_fields(meta: Any) -> dict[str, Any]:
    """`meta.fields` as a dict, whether sent as an object or a list of {name, value} pairs."""
    fields = _get(meta, "fields") if isinstance(meta, dict) else None
    if isinstance(fields, dict):
        return dict(fields)
    if isinstance(fields, list):
        out: dict[str, Any] = {}
        for item in fields:
            if isinstance(item, dict):
                name = opt_str(_get(item, "name", "key", "field"))
                if name:
                    out[name] = _get(item, "value")
        return out
    return {}


def normalize(payload: Any, received_at: datetime) -> Normalized:
    """Canonical events for one Postalytics event (or a list of them)."""
    return normalize_each(payload, "Postalytics event", received_at, _normalize_one)


def _normalize_one(body: dict[str, Any], received_at: datetime) -> CanonicalEvent | None:
    raw_type = _get(body, "eventType")
    if raw_type is None:
        raw_type = _get(body, "status")
    etype = event_type(raw_type)
    if etype is None:
        return None
    mail_id = opt_str(_get(body, "mailId", "mailpieceId", "id"))
    if not mail_id:
        raise bad_request("invalid_payload", "Postalytics event has no `mailId`")
    raw_date = _get(body, "eventDate")
    when = parse_time(raw_date, "eventDate") if raw_date is not None else received_at
    recipient = _recipient(_section(body, "to", "recipient", "contact", "address") or body)
    campaign = _campaign(body)
    metadata = meta_fields(_get(body, "meta"))
    metadata["postrelay"] = {
        "event_type": raw_type,
        "status_description": opt_str(_get(body, "statusDescription")),
        "expected_delivery_date": opt_str(_get(body, "expectedDeliveryDate")),
        "retry_attempts": _get(body, "retryAttempts"),
        **{k: v for k, v in campaign.items() if k != "campaign_id"},
    }
    dedupe = when.isoformat() if raw_date is not None else f"body-sha256:{_body_digest(body)}"
    return CanonicalEvent.build(
        source=NAME,
        source_event_id=f"{mail_id}:{etype.value}:{dedupe}",
        type=etype,
        occurred_at=when,
        received_at=received_at,
        mailpiece=Mailpiece(
            id=mail_id,
            kind=opt_str(_get(body, "mailpieceType", "kind", "format")),
            country=recipient.country,
            campaign_id=campaign.get("campaign_id"),
        ),
        recipient=recipient,
        metadata=metadata,
    )


def _recipient(rec: dict[str, Any]) -> Recipient:
    postal = opt_str(_get(rec, "zip", "zipCode", "postalCode", "postal_code", "postalOrZip"))
    first, last = opt_str(_get(rec, "firstName", "first_name")), opt_str(_get(rec, "lastName", "last_name"))
    name = (opt_str(_get(rec, "name", "fullName")) or " ".join(p for p in (first, last) if p)
            or opt_str(_get(rec, "company", "companyName")))
    return Recipient(
        name=name,
        email=opt_str(_get(rec, "email")),
        phone=opt_str(_get(rec, "phone", "phoneNumber")),
        address_line1=opt_str(_get(rec, "address1", "address", "addressLine1", "address_line1", "street")),
        address_line2=opt_str(_get(rec, "address2", "addressLine2", "address_line2")),
        city=opt_str(_get(rec, "city")),
        region=opt_str(_get(rec, "state", "province", "region")),
        postal_code=postal,
        country=country_code(_get(rec, "country", "countryCode"), postal),
    )


def _campaign(body: dict[str, Any]) -> dict[str, str | None]:
    """The campaign/drop section (a `campaign` or `drop` object, or top-level fields): ids, names, drop date."""
    camp = _section(body, "campaign", "campaignInfo")
    drop = _section(body, "drop", "dropInfo") or _section(camp, "drop")
    campaign_id = (opt_str(_get(camp, "id", "campaignId")) if camp else None) or opt_str(
        _get(body, "campaignId", "campaign_id", "campaign"))
    return {
        "campaign_id": campaign_id,
        "campaign_name": opt_str(_get(camp, "name", "campaignName")) or opt_str(_get(body, "campaignName")),
        "drop_id": opt_str(_get(drop, "id", "dropId")) or opt_str(_get(camp, "dropId")) or opt_str(_get(body, "dropId")),
        "drop_date": opt_str(_get(drop, "date", "dropDate")) or opt_str(_get(camp, "dropDate"))
        or opt_str(_get(body, "dropDate")),
    }


def _body_digest(body: dict[str, Any]) -> str:
    """Stable digest of the raw event without the fields that change between retries."""
    stable = {k: v for k, v in body.items() if _key(k) != "retryattempts"}
    text = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
