"""Realistic provider payloads (shapes from the design doc §2-§5 and the providers' API references)."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from typing import Any

# A fixed "now" for the injected clock: Monday 2024-05-06 15:00:00 UTC.
NOW = datetime(2024, 5, 6, 15, 0, 0, tzinfo=UTC)
NOW_TS = NOW.timestamp()


def short_id(*parts: Any) -> str:
    """A stable 16-hex-digit id derived from `parts` (same inputs, same id, in every process)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def iso(dt: datetime, millis: bool = True) -> str:
    """`2024-05-06T15:00:00.000Z` as the providers write it."""
    text = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{dt.microsecond // 1000:03d}"
    return text + "Z"


# --- PostGrid -------------------------------------------------------------------------------------------

POSTGRID_PREFIX = {"letter": "letter", "postcard": "postcard", "self_mailer": "self_mailer", "cheque": "cheque"}


def postgrid_contact(*, country: str = "US", postal: str = "94107", first: str = "Ada", last: str = "Lovelace",
                     email: str | None = "ada@example.com") -> dict[str, Any]:
    """A PostGrid contact as embedded in an order's `to`."""
    contact = {
        "id": "contact_pxd7wnnD1xY6H6etKNvjb4",
        "object": "contact",
        "live": False,
        "firstName": first,
        "lastName": last,
        "companyName": "Analytical Engines Ltd",
        "jobTitle": "Countess",
        "email": email,
        "phoneNumber": "+14155550100",
        "addressLine1": "145 Mulberry St",
        "addressLine2": "Apt 2",
        "city": "San Francisco",
        "provinceOrState": "CA",
        "postalOrZip": postal,
        "countryCode": country,
        "addressStatus": "verified",
        "createdAt": "2024-04-30T12:00:00.000Z",
        "updatedAt": "2024-04-30T12:00:00.000Z",
    }
    if country == "CA":
        contact.update(city="Toronto", provinceOrState="ON", addressLine1="290 Bremner Blvd")
    return contact


def postgrid_order(kind: str = "letter", order_id: str | None = None, *, status: str = "ready",
                   imb_status: str | None = None, imb_date: str | None = None, imb_zip: str | None = None,
                   mailing_class: str = "first_class", tracking_number: str | None = None,
                   metadata: dict[str, Any] | None = None, to: dict[str, Any] | None = None,
                   cancellation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full order object PostGrid puts in an event's `data`."""
    order: dict[str, Any] = {
        "id": order_id or f"{POSTGRID_PREFIX[kind]}_3bRGpDXLeD6TeKD5GzHmPK",
        "object": kind,
        "live": False,
        "description": "Spring renewal mailer",
        "metadata": metadata if metadata is not None else {"crm_contact_id": "0031x00000AbCdE", "campaign_id": "spring-24"},
        "mailingClass": mailing_class,
        "sendDate": "2024-05-01T00:00:00.000Z",
        "status": status,
        "to": to or postgrid_contact(),
        "from": {"id": "contact_sqF12lZ1VlBb", "object": "contact", "companyName": "PostRelay Inc",
                 "addressLine1": "20 Jay St", "city": "Brooklyn", "provinceOrState": "NY", "postalOrZip": "11201",
                 "countryCode": "US"},
        "url": "https://pg-prod-bucket-1.s3.amazonaws.com/test/letter_3bRGpDXLeD6TeKD5GzHmPK.pdf",
        "createdAt": "2024-05-01T09:00:00.000Z",
        "updatedAt": "2024-05-06T14:00:00.000Z",
    }
    if kind == "letter":
        order.update(addressPlacement="top_first_page", color=False, doubleSided=True, size="us_letter")
    elif kind == "postcard":
        order.update(size="6x4")
    elif kind == "cheque":
        order.update(amount=10000, currencyCode="USD", bankAccount="bank_account_123", number=5049)
    if imb_status is not None:
        order.update(imbStatus=imb_status, imbDate=imb_date or "2024-05-04T08:12:00.000Z", imbZIPCode=imb_zip or "94107")
    if tracking_number is not None:
        order["trackingNumber"] = tracking_number
    if cancellation is not None:
        order["cancellation"] = cancellation
    return order


def postgrid_event(event_type: str, data: dict[str, Any], *, event_id: str = "event_5sgxnZuRmCMC4JmkUZPzSn",
                   updated_fields: Any = None, created_at: str = "2024-05-06T14:00:00.000Z",
                   live: bool = False) -> dict[str, Any]:
    """A PostGrid event object `{id, object, type, live, createdAt, data, updatedFields}`."""
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "live": live,
        "createdAt": created_at,
        "data": copy.deepcopy(data),
    }
    if updated_fields is not None:
        event["updatedFields"] = updated_fields
    return event


def postgrid_status_update(kind: str, status: str, **kw: Any) -> dict[str, Any]:
    """`<kind>.updated` with `updatedFields.status`."""
    event_id = kw.pop("event_id", f"event_status_{kind}_{status}")
    created_at = kw.pop("created_at", "2024-05-06T14:00:00.000Z")
    order = postgrid_order(kind, status=status, **kw)
    return postgrid_event(f"{kind}.updated", order, event_id=event_id, created_at=created_at,
                          updated_fields={"status": status})


def postgrid_imb_update(kind: str, imb_status: str, *, imb_date: str = "2024-05-04T08:12:00.000Z",
                        imb_zip: str = "94107", status: str = "processed_for_delivery", **kw: Any) -> dict[str, Any]:
    """`<kind>.updated` with `updatedFields.imbStatus` (the order itself is already with USPS)."""
    event_id = kw.pop("event_id", f"event_imb_{kind}_{imb_status}")
    order = postgrid_order(kind, status=status, imb_status=imb_status, imb_date=imb_date, imb_zip=imb_zip, **kw)
    return postgrid_event(f"{kind}.updated", order, event_id=event_id,
                          updated_fields={"imbStatus": imb_status, "imbDate": imb_date, "imbZIPCode": imb_zip})


def postgrid_tracker_visit(order_id: str = "letter_3bRGpDXLeD6TeKD5GzHmPK", *,
                           event_id: str = "event_tracker_visit_1") -> dict[str, Any]:
    """`tracker.visited`: a QR/URL tracker visit naming its order."""
    data = {"id": "tracker_visit_9x8y7z", "object": "tracker_visit", "tracker": "tracker_1a2b3c",
            "order": order_id, "createdAt": "2024-05-09T18:30:00.000Z", "live": False}
    return postgrid_event("tracker.visited", data, event_id=event_id, created_at="2024-05-09T18:30:01.000Z")


# --- Lob ------------------------------------------------------------------------------------------------

LOB_PREFIX = {"letter": "ltr", "postcard": "psc", "self_mailer": "sfm", "check": "chk"}
LOB_SCAN_NAMES = {
    "mailed": "Mailed", "in_transit": "In Transit", "in_local_area": "In Local Area",
    "processed_for_delivery": "Processed for Delivery", "re-routed": "Re-Routed", "re_routed": "Re-Routed",
    "returned_to_sender": "Returned to Sender", "delivered": "Delivered", "pickup_available": "Pickup Available",
    "issue": "Issue", "international_exit": "International Exit",
}


def lob_tracking_event(name: str, time: str, *, location: str | None = "72231", certified: bool = False,
                       event_id: str | None = None) -> dict[str, Any]:
    """One entry of `body.tracking_events[]`."""
    return {
        "id": event_id or f"evnt_{short_id(name, time)}",
        "object": "tracking_event",
        "type": "certified" if certified else "normal",
        "name": name,
        "location": None if name == "Mailed" else location,
        "time": time,
        "details": {"event": name.lower().replace(" ", "_"), "description": name} if certified else None,
        "date_created": time,
        "date_modified": time,
    }


def lob_mailpiece(resource: str = "letter", piece_id: str | None = None, *,
                  tracking_events: list[dict[str, Any]] | None = None, country: str = "UNITED STATES",
                  zip_code: str = "94107", extra_service: str | None = None,
                  metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Lob letter/postcard/self mailer/check as it was at event time (the event's `body`)."""
    pid = piece_id or f"{LOB_PREFIX[resource]}_4868c3b754655f90"
    body: dict[str, Any] = {
        "id": pid,
        "object": resource,
        "description": "Spring renewal mailer",
        "metadata": metadata if metadata is not None else {"crm_contact_id": "0031x00000AbCdE"},
        "to": {
            "id": "adr_d3489cd64c791ab5", "object": "address", "name": "ADA LOVELACE", "company": "ANALYTICAL ENGINES",
            "email": "ada@example.com", "phone": "+14155550100", "address_line1": "145 MULBERRY ST",
            "address_line2": "APT 2", "address_city": "SAN FRANCISCO", "address_state": "CA", "address_zip": zip_code,
            "address_country": country,
        },
        "from": {"id": "adr_210a8d4b0b76d77b", "name": "POSTRELAY INC", "address_line1": "20 JAY ST",
                 "address_city": "BROOKLYN", "address_state": "NY", "address_zip": "11201",
                 "address_country": "UNITED STATES"},
        "mail_type": "usps_first_class",
        "campaign_id": "cmp_e05ee6d3c8a3a0f4",
        "tracking_events": tracking_events or [],
        "expected_delivery_date": "2024-05-09",
        "send_date": "2024-05-02T17:00:00.000Z",
        "date_created": "2024-05-02T16:00:00.000Z",
        "date_modified": "2024-05-06T14:00:00.000Z",
    }
    if extra_service is not None:
        body["extra_service"] = extra_service
        body["tracking_number"] = "9407111899562018654321"
    return body


def lob_event(type_id: str, body: dict[str, Any], *, event_id: str | None = None,
              date_created: str = "2024-05-06T14:05:00.000Z") -> dict[str, Any]:
    """A Lob event object `{id, object, reference_id, date_created, event_type{...}, body}`."""
    resource = type_id.split(".")[0]
    return {
        "id": event_id or f"evt_{short_id(type_id, body.get('id'))}",
        "object": "event",
        "reference_id": body["id"],
        "date_created": date_created,
        "event_type": {"id": type_id, "resource": f"{resource}s", "enabled_for_test": True, "object": "event_type"},
        "body": copy.deepcopy(body),
    }


# --- Postalytics ----------------------------------------------------------------------------------------


def postalytics_event(event_type: Any, *, mail_id: str = "6d2a91c5-3f0b-4a43-9f4e-1b2c3d4e5f60",
                      event_date: str = "2024-05-06T13:45:00", status: str | None = None,
                      recipient: dict[str, Any] | None = None, meta_fields: Any = None,
                      campaign_id: str = "118842") -> dict[str, Any]:
    """A Postalytics campaign webhook body."""
    body: dict[str, Any] = {
        "mailId": mail_id,
        "campaignId": campaign_id,
        "eventDate": event_date,
        "expectedDeliveryDate": "2024-05-09",
        "eventType": event_type,
        "status": status or str(event_type),
        "statusDescription": "the mailpiece has reached the next step",
        "retryAttempts": 0,
        "recipient": recipient or {
            "firstName": "Ada", "lastName": "Lovelace", "company": "Analytical Engines",
            "address1": "145 Mulberry St", "address2": "Apt 2", "city": "San Francisco", "state": "CA",
            "zip": "94107", "country": "US", "email": "ada@example.com",
        },
    }
    if meta_fields is not None:
        body["meta"] = {"fields": meta_fields}
    return body


CANADIAN_RECIPIENT = {"firstName": "Pierre", "lastName": "Tremblay", "address1": "290 Bremner Blvd",
                      "city": "Toronto", "state": "ON", "zip": "M5V 3L9", "email": "pierre@example.ca"}


# --- Generic (canonical event in) -----------------------------------------------------------------------


def generic_event(event_type: str = "processed_for_delivery", *, piece_id: str = "mp_1001",
                  occurred_at: str = "2024-05-06T12:00:00Z", **extra: Any) -> dict[str, Any]:
    """What a generic sender posts: a canonical event without the fields postrelay assigns."""
    event: dict[str, Any] = {
        "type": event_type,
        "occurred_at": occurred_at,
        "mailpiece": {"id": piece_id, "kind": "postcard", "country": "US", "campaign_id": "fall-24",
                      "mailing_class": "first_class", "tracking_number": None},
        "location": {"zip": "10001"},
        "recipient": {"name": "Grace Hopper", "email": "grace@example.com", "phone": "+12125550100",
                      "address_line1": "1 Navy Way", "address_line2": "Building 5", "city": "Arlington",
                      "region": "VA", "postal_code": "22202",
                      "country": "US"},
        "metadata": {"crm_id": "C-42"},
    }
    event.update(extra)
    return event
