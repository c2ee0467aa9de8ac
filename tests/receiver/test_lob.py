"""Lob webhooks over real HTTP: every event type (design doc §3), certified, return envelopes, scan times, signatures."""

from __future__ import annotations

import pytest

from postrelay.core.events import event_id
from tests.receiver.harness import LOB_SECRETS, Service, assert_accepted, assert_canonical_shape, assert_error
from tests.support import payloads as P
from tests.support import signing

RESOURCES = ["letter", "postcard", "self_mailer", "check"]
SCAN_TIME = "2024-05-04T09:31:00.000Z"  # the USPS scan: differs from the event's date_created on purpose
DATE_CREATED = "2024-05-06T14:05:00.000Z"
# Lob action -> canonical type; True when the action comes with a scan in body.tracking_events
ACTIONS = [
    ("created", "created", False),
    ("deleted", "cancelled", False),
    ("failed", "failed", False),
    ("mailed", "mailed", True),
    ("in_transit", "in_transit", True),
    ("in_local_area", "in_local_area", True),
    ("international_exit", "in_transit", True),
    ("processed_for_delivery", "processed_for_delivery", True),
    ("re-routed", "re_routed", True),
    ("returned_to_sender", "returned_to_sender", True),
    ("delivered", "delivered", True),
    ("viewed", "purl_opened", False),
]
CERTIFIED_ACTIONS = [
    ("mailed", "mailed"),
    ("in_transit", "in_transit"),
    ("in_local_area", "in_local_area"),
    ("processed_for_delivery", "processed_for_delivery"),
    ("pickup_available", "processed_for_delivery"),
    ("re-routed", "re_routed"),
    ("issue", "re_routed"),
    ("returned_to_sender", "returned_to_sender"),
    ("delivered", "delivered"),
]
RETURN_ENVELOPE_ACTIONS = [
    ("created", "created"),
    ("in_transit", "in_transit"),
    ("in_local_area", "in_local_area"),
    ("processed_for_delivery", "processed_for_delivery"),
    ("re_routed", "re_routed"),
    ("returned_to_sender", "returned_to_sender"),
]


def scans_for(action: str, *, certified: bool = False) -> list[dict]:
    """Earlier, non-matching scans plus the one matching `action` (if it has one) at SCAN_TIME in ZIP 94016."""
    scans = []
    if action != "mailed":
        scans.append(P.lob_tracking_event("Mailed", "2024-05-02T21:00:00.000Z", certified=certified))
    if action != "in_transit":
        scans.append(P.lob_tracking_event("In Transit", "2024-05-03T02:00:00.000Z", location="11201",
                                          certified=certified))
    name = P.LOB_SCAN_NAMES.get(action)
    if name:
        scans.append(P.lob_tracking_event(name, SCAN_TIME, location="94016", certified=certified))
    return scans


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize(("action", "expected", "scanned"), ACTIONS)
def test_event_type_maps(service: Service, resource: str, action: str, expected: str, scanned: bool) -> None:
    body = P.lob_mailpiece(resource, tracking_events=scans_for(action))
    event = P.lob_event(f"{resource}.{action}", body, date_created=DATE_CREATED)
    assert_accepted(service.post_lob(event))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == expected
    assert queued["source"] == "lob"
    assert queued["source_event_id"] == event["id"]
    assert queued["id"] == event_id("lob", event["id"], expected)
    assert queued["mailpiece"] == {"id": body["id"], "kind": resource, "country": "US",
                                   "campaign_id": "cmp_e05ee6d3c8a3a0f4", "mailing_class": "usps_first_class",
                                   "tracking_number": None}
    assert queued["recipient"] == {"name": "ADA LOVELACE", "email": "ada@example.com", "phone": "+14155550100",
                                   "address_line1": "145 MULBERRY ST", "address_line2": "APT 2",
                                   "city": "SAN FRANCISCO", "region": "CA",
                                   "postal_code": "94107", "country": "US"}
    assert queued["metadata"]["crm_contact_id"] == "0031x00000AbCdE"
    assert queued["metadata"]["postrelay"]["provider_type"] == f"{resource}.{action}"
    assert queued["estimated"] is False
    if scanned:
        assert queued["occurred_at"] == "2024-05-04T09:31:00Z"  # the scan's time, not date_created
        expected_zip = None if action == "mailed" else "94016"  # Lob: location is null for Mailed scans
        assert queued["location"] == {"zip": expected_zip}
    else:
        assert queued["occurred_at"] == "2024-05-06T14:05:00Z"


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("action", ["rendered_pdf", "rendered_thumbnails", "billed"])
def test_non_tracking_events_are_ignored(service: Service, resource: str, action: str) -> None:
    event = P.lob_event(f"{resource}.{action}", P.lob_mailpiece(resource))
    assert_accepted(service.post_lob(event), accepted=0, ignored=1)
    assert service.stream_len() == 0


@pytest.mark.parametrize("type_id", ["address.created", "bank_account.verified", "letter"])
def test_other_resources_are_ignored(service: Service, type_id: str) -> None:
    event = P.lob_event(type_id, {"id": "adr_123", "object": "address"})
    assert_accepted(service.post_lob(event), accepted=0, ignored=1)


@pytest.mark.parametrize(("action", "expected"), CERTIFIED_ACTIONS)
def test_certified_letter_events(service: Service, action: str, expected: str) -> None:
    body = P.lob_mailpiece("letter", tracking_events=scans_for(action, certified=True), extra_service="certified")
    event = P.lob_event(f"letter.certified.{action}", body)
    assert_accepted(service.post_lob(event))
    [queued] = service.queued()
    assert queued["type"] == expected
    assert queued["mailpiece"]["id"] == body["id"]  # same piece as the outbound letter
    assert queued["mailpiece"]["kind"] == "letter"
    assert queued["mailpiece"]["mailing_class"] == "certified"
    assert queued["mailpiece"]["tracking_number"] == "9407111899562018654321"
    assert queued["occurred_at"] == "2024-05-04T09:31:00Z"


@pytest.mark.parametrize(("action", "expected"), RETURN_ENVELOPE_ACTIONS)
def test_return_envelope_events_land_on_their_own_piece(service: Service, action: str, expected: str) -> None:
    body = P.lob_mailpiece("letter", piece_id="ltr_ret_0001")
    event = P.lob_event(f"letter.return_envelope.{action}", body)
    assert_accepted(service.post_lob(event))
    [queued] = service.queued()
    assert queued["type"] == expected
    assert queued["mailpiece"]["id"] == "ltr_ret_0001:return_envelope"
    assert queued["mailpiece"]["kind"] == "return_envelope"


def test_return_envelope_never_moves_the_letters_stage(service: Service) -> None:
    letter = P.lob_mailpiece("letter", piece_id="ltr_ret_0002", tracking_events=scans_for("in_transit"))
    assert_accepted(service.post_lob(P.lob_event("letter.in_transit", letter, event_id="evt_letter_transit")))
    for i, action in enumerate(["in_transit", "processed_for_delivery", "returned_to_sender"]):
        env = P.lob_event(f"letter.return_envelope.{action}", letter, event_id=f"evt_env_{i}",
                          date_created=f"2024-05-1{i}T10:00:00.000Z")
        assert_accepted(service.post_lob(env))
    service.apply_queued()
    outbound = service.get_piece("lob", "ltr_ret_0002").json()
    assert outbound["stage"] == "in_transit"
    assert [e["type"] for e in outbound["events"]] == ["in_transit"]
    envelope = service.get_piece("lob", "ltr_ret_0002:return_envelope").json()
    assert envelope["kind"] == "return_envelope"
    assert envelope["stage"] == "returned_to_sender"
    assert [e["type"] for e in envelope["events"]] == ["in_transit", "processed_for_delivery", "returned_to_sender"]


def test_scan_time_is_the_latest_matching_scan(service: Service) -> None:
    scans = [
        P.lob_tracking_event("In Transit", "2024-05-03T02:00:00.000Z", location="11201"),
        P.lob_tracking_event("In Transit", "2024-05-03T19:45:00.000Z", location="07097"),
        P.lob_tracking_event("In Local Area", "2024-05-04T03:00:00.000Z", location="94016"),
    ]
    event = P.lob_event("letter.in_transit", P.lob_mailpiece("letter", tracking_events=scans))
    assert_accepted(service.post_lob(event))
    [queued] = service.queued()
    assert queued["occurred_at"] == "2024-05-03T19:45:00Z"
    assert queued["location"] == {"zip": "07097"}


def test_no_matching_scan_falls_back_to_date_created(service: Service) -> None:
    body = P.lob_mailpiece("postcard", tracking_events=[P.lob_tracking_event("Mailed", "2024-05-02T21:00:00.000Z")])
    event = P.lob_event("postcard.delivered", body, date_created="2024-05-07T16:00:00.000Z")
    assert_accepted(service.post_lob(event))
    assert service.queued()[0]["occurred_at"] == "2024-05-07T16:00:00Z"


def test_canadian_recipient(service: Service) -> None:
    body = P.lob_mailpiece("postcard", country="CANADA", zip_code="M5V 3L9")
    assert_accepted(service.post_lob(P.lob_event("postcard.mailed", body)))
    [queued] = service.queued()
    assert queued["mailpiece"]["country"] == "CA"
    assert queued["recipient"]["postal_code"] == "M5V 3L9"


def test_same_event_twice_is_a_duplicate_with_the_same_id(service: Service) -> None:
    event = P.lob_event("letter.in_transit", P.lob_mailpiece("letter", tracking_events=scans_for("in_transit")))
    assert_accepted(service.post_lob(event))
    service.clock.advance(30)
    assert_accepted(service.post_lob(event), accepted=0, duplicates=1)
    assert service.stream_len() == 1


@pytest.mark.parametrize("field", ["id", "event_type"])
def test_event_without_id_or_type_is_400(service: Service, field: str) -> None:
    event = P.lob_event("letter.mailed", P.lob_mailpiece("letter"))
    del event[field]
    assert_error(service.post_lob(event), 400, "invalid_payload")


# --- signatures -------------------------------------------------------------------------------------------


def test_secret_rotation_either_secret_signs(service: Service) -> None:
    body = P.lob_mailpiece("letter")
    assert_accepted(service.post_lob(P.lob_event("letter.created", body, event_id="evt_a"), secret=LOB_SECRETS[0]))
    assert_accepted(service.post_lob(P.lob_event("letter.created", body, event_id="evt_b"), secret=LOB_SECRETS[1]))


def test_wrong_secret_is_401(service: Service) -> None:
    resp = service.post_lob(P.lob_event("letter.created", P.lob_mailpiece()), secret="some-other-secret-0123456789")
    assert_error(resp, 401, "invalid_signature")
    assert service.stream_len() == 0


def test_tampered_body_is_401(service: Service) -> None:
    body, headers = signing.lob_signed(P.lob_event("letter.mailed", P.lob_mailpiece()), LOB_SECRETS[0],
                                       service.clock())
    tampered = body.replace(b"letter.mailed", b"letter.delivered")
    assert_error(service.post("/webhooks/lob", tampered, headers), 401, "invalid_signature")


def test_signature_made_with_another_timestamp_is_401(service: Service) -> None:
    body, headers = signing.lob_signed(P.lob_event("letter.mailed", P.lob_mailpiece()), LOB_SECRETS[0],
                                       service.clock())
    headers["Lob-Signature-Timestamp"] = str(int(service.clock()) + 1)
    assert_error(service.post("/webhooks/lob", body, headers), 401, "invalid_signature")


@pytest.mark.parametrize("missing", ["Lob-Signature", "Lob-Signature-Timestamp", "both"])
def test_missing_headers_is_401(service: Service, missing: str) -> None:
    body, headers = signing.lob_signed(P.lob_event("letter.mailed", P.lob_mailpiece()), LOB_SECRETS[0],
                                       service.clock())
    for name in (["Lob-Signature", "Lob-Signature-Timestamp"] if missing == "both" else [missing]):
        del headers[name]
    assert_error(service.post("/webhooks/lob", body, headers), 401, "missing_signature")


@pytest.mark.parametrize("timestamp", ["soon", "-5", "nan", "inf", "1e400"])
def test_unparseable_timestamp_is_401(service: Service, timestamp: str) -> None:
    body = signing.to_bytes(P.lob_event("letter.mailed", P.lob_mailpiece()))
    headers = {"Lob-Signature-Timestamp": timestamp,
               "Lob-Signature": signing.hmac_hex(LOB_SECRETS[0], timestamp.encode() + b"." + body)}
    assert_error(service.post("/webhooks/lob", body, headers), 401, "invalid_timestamp")


@pytest.mark.parametrize("millis", [False, True], ids=["seconds", "milliseconds"])
@pytest.mark.parametrize(("offset", "ok"), [(-240, True), (-360, False), (240, True), (360, False)])
def test_five_minute_tolerance(service: Service, millis: bool, offset: float, ok: bool) -> None:
    resp = service.post_lob(P.lob_event("letter.mailed", P.lob_mailpiece()), timestamp=service.clock() + offset,
                            millis=millis)
    if ok:
        assert_accepted(resp)
    else:
        assert_error(resp, 401, "timestamp_out_of_tolerance")
        assert service.stream_len() == 0


def test_uppercase_hex_signature_is_accepted(service: Service) -> None:
    body, headers = signing.lob_signed(P.lob_event("letter.mailed", P.lob_mailpiece()), LOB_SECRETS[0],
                                       service.clock())
    headers["Lob-Signature"] = headers["Lob-Signature"].upper()
    assert_accepted(service.post("/webhooks/lob", body, headers))
