"""Lob webhooks: `Lob-Signature` = hex(HMAC-SHA256(secret, timestamp + "." + body)).

`<resource>.<action>` for letters, postcards, self mailers and checks; certified letters send
`letter.certified.<action>`; return envelopes have their own lifecycle `letter.return_envelope.<action>`,
tracked as a separate piece `<letter id>:return_envelope` so they never move the outbound letter.
USPS Informed Delivery emails arrive as `<resource>.informed_delivery.<action>` (unranked engagement types).
The occurrence time is the matching scan's `body.tracking_events[].time`, not `date_created`; a certified
scan's `details` (`event` such as `package_lost`, `action_required`, `description`, `notes`) are kept in
`metadata.postrelay.details`. `*.rejected` and `*.failed` carry the reason in `metadata.postrelay.reason`.
Ignored (no tracking): `IGNORED_ACTIONS` of every resource and every event of `IGNORED_RESOURCES`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.datastructures import Headers

from postrelay.core.config import SignedSource
from postrelay.core.events import CanonicalEvent, EventType, Location, Mailpiece, Recipient
from postrelay.receiver.errors import bad_request, unauthorized
from postrelay.receiver.providers.base import (
    Normalized,
    country_code,
    dict_or_empty,
    normalize_each,
    opt_str,
    parse_json,
    parse_time,
)
from postrelay.receiver.signatures import any_hex_signature_matches, check_tolerance, timestamp_seconds

NAME = "lob"
RESOURCES = {"letter": "letter", "postcard": "postcard", "self_mailer": "self_mailer", "check": "check"}
ACTIONS: dict[str, EventType | None] = {
    "created": EventType.CREATED,
    "rendered_pdf": None,
    "rendered_thumbnails": None,
    "billed": None,
    "deleted": EventType.CANCELLED,
    "failed": EventType.FAILED,
    "mailed": EventType.MAILED,
    "in_transit": EventType.IN_TRANSIT,
    "international_exit": EventType.IN_TRANSIT,
    "in_local_area": EventType.IN_LOCAL_AREA,
    "processed_for_delivery": EventType.PROCESSED_FOR_DELIVERY,
    "pickup_available": EventType.PROCESSED_FOR_DELIVERY,  # certified: waiting at the recipient's post office
    "re_routed": EventType.RE_ROUTED,
    "issue": EventType.RE_ROUTED,  # certified: a delivery issue; the piece keeps moving
    "returned_to_sender": EventType.RETURNED_TO_SENDER,
    "delivered": EventType.DELIVERED,
    "viewed": EventType.PURL_OPENED,
    "rejected": EventType.FAILED,  # the piece was never created (e.g. one piece of a batch request failed)
}
INFORMED_DELIVERY: dict[str, EventType] = {
    "email_sent": EventType.INFORMED_DELIVERY_SENT,
    "email_opened": EventType.INFORMED_DELIVERY_OPENED,
    "email_clicked_through": EventType.INFORMED_DELIVERY_CLICKED,
}
IGNORED_ACTIONS = frozenset(action for action, etype in ACTIONS.items() if etype is None)
IGNORED_RESOURCES = frozenset({"address", "bank_account"})
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    return _NON_WORD.sub("_", text.lower()).strip("_")


def verify(body: bytes, headers: Headers, settings: SignedSource, now: float) -> Any:
    """Check `Lob-Signature` over the raw body and return the parsed event."""
    signature = headers.get("lob-signature")
    timestamp = headers.get("lob-signature-timestamp")
    if not signature or not timestamp:
        raise unauthorized("missing_signature", "Lob-Signature and Lob-Signature-Timestamp headers are required")
    ts = timestamp_seconds(timestamp, "Lob-Signature-Timestamp")
    if not any_hex_signature_matches(settings.secrets, timestamp.strip().encode() + b"." + body, [signature]):
        raise unauthorized("invalid_signature", "Lob-Signature does not match the body for any secret")
    check_tolerance(ts, now, settings.tolerance, "Lob-Signature-Timestamp")
    return parse_json(body)


def normalize(payload: Any, received_at: datetime) -> Normalized:
    """Canonical event for one Lob event object (or a list of them)."""
    return normalize_each(payload, "Lob event", received_at, _normalize_one)


def _event_type_id(event: dict[str, Any]) -> str:
    et = event.get("event_type")
    value = opt_str(et.get("id")) if isinstance(et, dict) else opt_str(et)
    if not value:
        raise bad_request("invalid_payload", "Lob event has no `event_type.id`")
    return value


def _normalize_one(event: dict[str, Any], received_at: datetime) -> CanonicalEvent | None:
    type_id = _event_type_id(event)
    source_event_id = opt_str(event.get("id"))
    if not source_event_id:
        raise bad_request("invalid_payload", "Lob event has no `id`")
    parts = type_id.split(".")
    resource = RESOURCES.get(parts[0])
    if resource is None or len(parts) < 2:
        return None
    variant = parts[1] if len(parts) > 2 and parts[1] in {"certified", "return_envelope", "informed_delivery"} else None
    action = _slug(parts[-1])
    etype = INFORMED_DELIVERY.get(action) if variant == "informed_delivery" else ACTIONS.get(action)
    if etype is None:
        return None
    body = dict_or_empty(event.get("body"))
    reference = opt_str(event.get("reference_id")) or opt_str(body.get("id"))
    if not reference:
        raise bad_request("invalid_payload", "Lob event has no `reference_id`")
    created = event.get("date_created")
    when = parse_time(created, "date_created") if created else received_at
    scan = _matching_scan(body.get("tracking_events"), action)
    if scan is not None and scan.get("time"):
        when = parse_time(scan["time"], "tracking_events[].time")
    to = dict_or_empty(body.get("to"))
    postal = opt_str(to.get("address_zip"))
    recipient = Recipient(
        name=opt_str(to.get("name")) or opt_str(to.get("company")),
        email=opt_str(to.get("email")),
        phone=opt_str(to.get("phone")),
        address_line1=opt_str(to.get("address_line1")),
        address_line2=opt_str(to.get("address_line2")),
        city=opt_str(to.get("address_city")),
        region=opt_str(to.get("address_state")),
        postal_code=postal,
        country=country_code(to.get("address_country"), postal),
    )
    piece_id, kind = reference, resource
    if variant == "return_envelope":
        piece_id, kind = f"{reference}:return_envelope", "return_envelope"
    certified = variant == "certified" or opt_str(body.get("extra_service")) in {"certified", "certified_return_receipt"}
    metadata = dict(dict_or_empty(body.get("metadata")))
    detail: dict[str, Any] = {"provider_type": type_id, "scan": opt_str(scan.get("name")) if scan else None}
    scan_details = _scan_details(scan)
    if scan_details:
        detail["details"] = scan_details
    if etype is EventType.FAILED:
        detail.update(_failure(body))
    metadata["postrelay"] = detail
    return CanonicalEvent.build(
        source=NAME,
        source_event_id=source_event_id,
        type=etype,
        occurred_at=when,
        received_at=received_at,
        mailpiece=Mailpiece(
            id=piece_id,
            kind=kind,
            country=recipient.country,
            campaign_id=opt_str(body.get("campaign_id")) or opt_str(metadata.get("campaign_id")),
            mailing_class="certified" if certified else opt_str(body.get("mail_type")),
            tracking_number=opt_str(body.get("tracking_number")),
        ),
        location=Location(zip=opt_str(scan.get("location")) if scan else None),
        recipient=recipient,
        metadata=metadata,
    )


def _matching_scan(tracking_events: Any, action: str) -> dict[str, Any] | None:
    """The latest tracking event whose name matches the webhook's action (e.g. `Re-Routed` ~ `re_routed`)."""
    if not isinstance(tracking_events, list):
        return None
    matches = [t for t in tracking_events if isinstance(t, dict) and _slug(str(t.get("name", ""))) == action]
    if not matches:
        return None
    return max(matches, key=lambda t: str(t.get("time") or ""))


def _scan_details(scan: dict[str, Any] | None) -> dict[str, Any] | None:
    """A certified scan's `details` (`event`, `description`, `notes`, `action_required`), or None."""
    details = dict_or_empty(scan.get("details")) if scan else {}
    if not details:
        return None
    out: dict[str, Any] = {name: opt_str(details.get(name)) for name in ("event", "description", "notes")}
    action_required = details.get("action_required")
    out["action_required"] = action_required if isinstance(action_required, bool) else None
    return out


def _failure(body: dict[str, Any]) -> dict[str, Any]:
    """`reason` (and `remediation`) of a rejected or failed piece, from whichever of Lob's shapes is present:
    `failure_reason` (an object with `failure_reason`/`remediation`/`errors`, or a string), `error`
    (`{message, code}` or a string), `errors[]`, `reason`, `message`. The shape of `*.rejected` bodies is not
    documented: every one is looked at."""
    reason = remediation = None
    failure = body.get("failure_reason")
    if isinstance(failure, dict):
        reason, remediation = opt_str(failure.get("failure_reason")), opt_str(failure.get("remediation"))
        errors = failure.get("errors")
    else:
        reason, errors = opt_str(failure), body.get("errors")
    error = body.get("error")
    if not reason and isinstance(error, dict):
        reason = opt_str(error.get("message")) or opt_str(error.get("code"))
    reason = reason or opt_str(error) or opt_str(body.get("reason")) or opt_str(body.get("message"))
    if not reason and isinstance(errors, list):
        messages = [opt_str(e.get("message")) if isinstance(e, dict) else opt_str(e) for e in errors]
        reason = "; ".join(m for m in messages if m) or None
    return {"reason": reason, "remediation": remediation}
