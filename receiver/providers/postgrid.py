"""PostGrid Print & Mail webhooks: JWT bodies (the default) or JSON with `PostGrid-Signature`.

Mapping (design doc §2): every status change arrives as `<kind>.updated`; the canonical event comes from
the fields named in `updatedFields` (their current values read from `data`):
`status` ready→created, printing→printed, processed_for_delivery→mailed (handed to the postal service),
completed→delivered (estimated), cancelled→cancelled; `imbStatus` entered_mail_stream→in_transit,
out_for_delivery→processed_for_delivery, returned_to_sender→returned_to_sender (at `imbDate`, `imbZIPCode`).
`tracker.visited` → purl_opened. Everything else (billing, campaigns, …) is ignored.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import jwt
from starlette.datastructures import Headers

from postrelay.core.config import PostGridSource
from postrelay.core.events import CanonicalEvent, EventType, Location, Mailpiece, Recipient
from postrelay.receiver.errors import bad_request, unauthorized
from postrelay.receiver.providers.base import (
    Normalized,
    country_code,
    dict_or_empty,
    ensure_encodable,
    ensure_shallow,
    normalize_each,
    opt_str,
    parse_json,
    parse_time,
    require_object,
)
from postrelay.receiver.signatures import any_hex_signature_matches, check_tolerance, timestamp_seconds

NAME = "postgrid"
SIGNATURE_HEADER = "postgrid-signature"
ORDER_KINDS = frozenset({"letter", "postcard", "self_mailer", "cheque", "snap_pack", "box"})
STATUS_MAP = {
    "ready": EventType.CREATED,
    "printing": EventType.PRINTED,
    "processed_for_delivery": EventType.MAILED,
    "completed": EventType.DELIVERED,
    "cancelled": EventType.CANCELLED,
}
IMB_MAP = {
    "entered_mail_stream": EventType.IN_TRANSIT,
    "out_for_delivery": EventType.PROCESSED_FOR_DELIVERY,
    "returned_to_sender": EventType.RETURNED_TO_SENDER,
}
_ORDER_ID_KEYS = ("order", "orderID", "orderId", "letter", "postcard", "selfMailer", "self_mailer", "cheque")


def verify(body: bytes, headers: Headers, settings: PostGridSource, now: float) -> Any:
    """Authenticate the raw body and return the event object it carries."""
    header = headers.get(SIGNATURE_HEADER)
    if header is not None:
        _verify_json_signature(body, header, settings, now)
        return parse_json(body)
    stripped = body.strip()
    if stripped.startswith(b"{") or stripped.startswith(b"["):
        raise unauthorized("missing_signature", "JSON webhook without a PostGrid-Signature header")
    return _decode_jwt(stripped, settings, now)


def _verify_json_signature(body: bytes, header: str, settings: PostGridSource, now: float) -> None:
    timestamp, sigs = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value.strip()
        elif key == "v1":
            sigs.append(value.strip())
    if not timestamp or not sigs:
        raise unauthorized("invalid_signature", "PostGrid-Signature must look like t=<timestamp>,v1=<hex>")
    ts = timestamp_seconds(timestamp, "PostGrid-Signature t")
    if not any_hex_signature_matches(settings.secrets, timestamp.encode() + b"." + body, sigs):
        raise unauthorized("invalid_signature", "PostGrid-Signature does not match the body for any secret")
    check_tolerance(ts, now, settings.tolerance, "PostGrid-Signature t")


def _decode_jwt(token: bytes, settings: PostGridSource, now: float) -> Any:
    if token.count(b".") != 2:
        raise bad_request("invalid_body", "body is neither a JWT nor signed JSON")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise bad_request("invalid_body", "body is not a decodable JWT") from None
    except jwt.InvalidTokenError as exc:  # e.g. a non-string `kid` or an unknown `crit` extension
        raise unauthorized("invalid_token", f"JWT header rejected: {type(exc).__name__}") from None
    if header.get("alg") != "HS256":
        raise unauthorized("invalid_signature", f"JWT algorithm {str(header.get('alg'))[:20]!r} is not accepted (HS256 only)")
    claims = None
    for secret in settings.secrets:
        try:
            # Time claims are checked below against the receiver's (injectable) clock, not PyJWT's wall clock.
            claims = jwt.decode(token, secret, algorithms=["HS256"], options=_JWT_OPTIONS)
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise unauthorized("invalid_token", f"JWT rejected: {type(exc).__name__}") from None
    if claims is None:
        raise unauthorized("invalid_signature", "JWT signature does not match any configured secret")
    _check_time_claims(claims, now, settings.tolerance)
    ensure_encodable(claims)
    ensure_shallow(claims)
    if "type" not in claims and isinstance(claims.get("event"), dict):
        return claims["event"]
    return claims


_JWT_OPTIONS: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                     "verify_iss": False, "verify_sub": False, "verify_jti": False}


def _check_time_claims(claims: dict[str, Any], now: float, tolerance: float) -> None:
    """`exp`, `nbf` and `iat` against `now`, each with the source's tolerance (a retry of a token signed
    at the first attempt still passes; PostGrid retries after 1 h, 2 h and 4 h)."""
    values = {}
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise unauthorized("invalid_token", f"JWT {name} claim is not a number")
        values[name] = float(value)
    if "exp" in values and now > values["exp"] + tolerance:
        raise unauthorized("timestamp_out_of_tolerance", "JWT has expired")
    if "nbf" in values and now + tolerance < values["nbf"]:
        raise unauthorized("timestamp_out_of_tolerance", "JWT is not valid yet (nbf in the future)")
    if "iat" in values:
        check_tolerance(values["iat"], now, tolerance, "JWT iat")


def normalize(payload: Any, received_at: datetime) -> Normalized:
    """Canonical events for one PostGrid event object (or a list of them)."""
    return normalize_each(payload, "PostGrid event", received_at, _normalize_one)


def _normalize_one(event: dict[str, Any], received_at: datetime) -> list[CanonicalEvent]:
    etype = opt_str(event.get("type"))
    source_event_id = opt_str(event.get("id"))
    if not etype:
        raise bad_request("invalid_payload", "PostGrid event has no `type`")
    if not source_event_id:
        raise bad_request("invalid_payload", "PostGrid event has no `id`")
    kind, _, action = etype.rpartition(".")
    data = event.get("data")
    if etype == "tracker.visited":
        return [_tracker_visit(event, require_object(data, "data"), source_event_id, received_at)]
    if kind not in ORDER_KINDS or action not in {"created", "updated"}:
        return []
    data = require_object(data, "data")
    created_at = event.get("createdAt")
    when = parse_time(created_at, "createdAt") if created_at else received_at
    if action == "created":
        return [_build(EventType.CREATED, kind, data, event, source_event_id, when, received_at)]
    changed = _changed_fields(event.get("updatedFields"))
    out = []
    if "status" in changed:
        status = opt_str(data.get("status")) or opt_str(dict_or_empty(event.get("updatedFields")).get("status"))
        mapped = STATUS_MAP.get(status or "")
        if mapped:
            out.append(_build(mapped, kind, data, event, source_event_id, when, received_at))
    if "imbStatus" in changed:
        imb = opt_str(data.get("imbStatus")) or opt_str(dict_or_empty(event.get("updatedFields")).get("imbStatus"))
        mapped = IMB_MAP.get(imb or "")
        if mapped:
            imb_date = data.get("imbDate")
            scan_time = parse_time(imb_date, "data.imbDate") if imb_date else when
            out.append(_build(mapped, kind, data, event, source_event_id, scan_time, received_at,
                              zip_code=opt_str(data.get("imbZIPCode"))))
    return out


def _changed_fields(updated: Any) -> set[str]:
    """Names of changed fields; when PostGrid sends no `updatedFields`, look at both status fields."""
    if isinstance(updated, dict):
        return set(updated)
    if isinstance(updated, list):
        return {f for f in updated if isinstance(f, str)}
    return {"status", "imbStatus"}


def _recipient(to: dict[str, Any]) -> Recipient:
    name = " ".join(p for p in (opt_str(to.get("firstName")), opt_str(to.get("lastName"))) if p)
    postal = opt_str(to.get("postalOrZip"))
    return Recipient(
        name=name or opt_str(to.get("companyName")),
        email=opt_str(to.get("email")),
        phone=opt_str(to.get("phoneNumber")),
        address_line1=opt_str(to.get("addressLine1")),
        address_line2=opt_str(to.get("addressLine2")),
        city=opt_str(to.get("city")),
        region=opt_str(to.get("provinceOrState")),
        postal_code=postal,
        country=country_code(to.get("countryCode"), postal),
    )


def _build(etype: EventType, kind: str, data: dict[str, Any], event: dict[str, Any], source_event_id: str,
           when: datetime, received_at: datetime, zip_code: str | None = None) -> CanonicalEvent:
    piece_id = opt_str(data.get("id"))
    if not piece_id:
        raise bad_request("invalid_payload", "PostGrid event data has no order `id`")
    recipient = _recipient(dict_or_empty(data.get("to")))
    metadata = dict(dict_or_empty(data.get("metadata")))
    detail: dict[str, Any] = {"provider_type": event.get("type"), "live": bool(event.get("live", data.get("live")))}
    if etype is EventType.CANCELLED:
        cancellation = dict_or_empty(data.get("cancellation"))
        detail["cancellation_reason"] = opt_str(cancellation.get("reason"))
        detail["cancellation_note"] = opt_str(cancellation.get("note"))
    metadata["postrelay"] = detail
    campaign = data.get("campaign")
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
            campaign_id=opt_str(campaign.get("id") if isinstance(campaign, dict) else campaign)
            or opt_str(metadata.get("campaign_id")),
            mailing_class=opt_str(data.get("mailingClass")),
            tracking_number=opt_str(data.get("trackingNumber")),
        ),
        location=Location(zip=zip_code),
        recipient=recipient,
        metadata=metadata,
        estimated=etype is EventType.DELIVERED,
    )


def _tracker_visit(event: dict[str, Any], data: dict[str, Any], source_event_id: str,
                   received_at: datetime) -> CanonicalEvent:
    """A QR/URL tracker visit. The visit names its order under one of several keys (unconfirmed)."""
    order: Any = None
    for key in _ORDER_ID_KEYS:
        if data.get(key):
            order = data[key]
            break
    order_obj = order if isinstance(order, dict) else {}
    piece_id = opt_str(order_obj.get("id")) if order_obj else opt_str(order)
    kind = None
    if piece_id:
        kind = next((k for k in sorted(ORDER_KINDS, key=len, reverse=True) if piece_id.startswith(k + "_")), None)
    else:
        piece_id = opt_str(data.get("tracker")) or opt_str(data.get("trackerID")) or opt_str(data.get("id"))
        kind = "tracker"
    if not piece_id:
        raise bad_request("invalid_payload", "tracker.visited event names no order or tracker")
    when_raw = data.get("createdAt") or event.get("createdAt")
    when = parse_time(when_raw, "createdAt") if when_raw else received_at
    recipient = _recipient(dict_or_empty(order_obj.get("to")))
    metadata = dict(dict_or_empty(order_obj.get("metadata")))
    metadata["postrelay"] = {"provider_type": "tracker.visited", "tracker": opt_str(data.get("tracker")),
                             "live": bool(event.get("live", data.get("live")))}
    return CanonicalEvent.build(
        source=NAME, source_event_id=source_event_id, type=EventType.PURL_OPENED, occurred_at=when,
        received_at=received_at,
        mailpiece=Mailpiece(id=piece_id, kind=kind, country=recipient.country,
                            mailing_class=opt_str(order_obj.get("mailingClass"))),
        recipient=recipient, metadata=metadata,
    )
