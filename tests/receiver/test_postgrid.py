"""PostGrid webhooks over real HTTP: the mapping table of design doc §2, both payload formats, signatures."""

from __future__ import annotations

import pytest

from postrelay.core.events import event_id
from tests.receiver.harness import (
    PG_SECRETS,
    Service,
    assert_accepted,
    assert_canonical_shape,
    assert_error,
)
from tests.support import payloads as P
from tests.support import signing

KINDS = ["letter", "postcard", "self_mailer", "cheque"]
# status -> (canonical type, estimated)
STATUS_TABLE = [
    ("ready", "created", False),
    ("printing", "printed", False),
    ("processed_for_delivery", "mailed", False),
    ("completed", "delivered", True),
    ("cancelled", "cancelled", False),
]
IMB_TABLE = [
    ("entered_mail_stream", "in_transit"),
    ("out_for_delivery", "processed_for_delivery"),
    ("returned_to_sender", "returned_to_sender"),
]
HOUR = 3600.0


@pytest.mark.parametrize("fmt", ["jwt", "json"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "expected", "estimated"), STATUS_TABLE)
def test_status_update_maps_to_canonical_type(service: Service, kind: str, status: str, expected: str,
                                              estimated: bool, fmt: str) -> None:
    cancellation = {"reason": "invalid_content", "note": "blank page"} if status == "cancelled" else None
    event = P.postgrid_status_update(kind, status, cancellation=cancellation, created_at="2024-05-06T14:00:00.000Z")
    resp = service.post_postgrid(event, fmt=fmt)
    assert_accepted(resp)
    [queued] = service.queued()
    assert_canonical_shape(queued)
    order = event["data"]
    assert queued["type"] == expected
    assert queued["stage"] == expected
    assert queued["estimated"] is estimated
    assert queued["source"] == "postgrid"
    assert queued["source_event_id"] == event["id"]
    assert queued["id"] == event_id("postgrid", event["id"], expected)
    assert queued["occurred_at"] == "2024-05-06T14:00:00Z"  # the event's createdAt
    assert queued["received_at"] == "2024-05-06T15:00:00Z"  # the injected clock
    assert queued["mailpiece"] == {"id": order["id"], "kind": kind, "country": "US", "campaign_id": "spring-24",
                                   "mailing_class": "first_class", "tracking_number": None}
    assert queued["recipient"] == {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+14155550100",
                                   "address_line1": "145 Mulberry St", "address_line2": "Apt 2",
                                   "city": "San Francisco", "region": "CA",
                                   "postal_code": "94107", "country": "US"}
    assert queued["metadata"]["crm_contact_id"] == "0031x00000AbCdE"
    assert queued["metadata"]["postrelay"]["provider_type"] == f"{kind}.updated"
    assert queued["location"] == {"zip": None}
    if status == "cancelled":
        assert queued["metadata"]["postrelay"]["cancellation_reason"] == "invalid_content"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("imb_status", "expected"), IMB_TABLE)
def test_imb_status_maps_with_scan_time_and_zip(service: Service, kind: str, imb_status: str, expected: str) -> None:
    event = P.postgrid_imb_update(kind, imb_status, imb_date="2024-05-04T08:12:00.000Z", imb_zip="94016")
    assert_accepted(service.post_postgrid(event, fmt="json"))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == expected
    assert queued["occurred_at"] == "2024-05-04T08:12:00Z"  # imbDate, not createdAt
    assert queued["location"] == {"zip": "94016"}  # imbZIPCode
    assert queued["mailpiece"]["kind"] == kind
    assert queued["estimated"] is False


def test_status_and_imb_status_in_one_event_give_two_events(service: Service) -> None:
    order = P.postgrid_order("letter", status="processed_for_delivery", imb_status="entered_mail_stream",
                             imb_date="2024-05-03T22:00:00.000Z", imb_zip="11201")
    event = P.postgrid_event("letter.updated", order, event_id="event_both_fields",
                             updated_fields={"status": "processed_for_delivery", "imbStatus": "entered_mail_stream"})
    assert_accepted(service.post_postgrid(event), accepted=2)
    queued = service.queued()
    assert sorted(e["type"] for e in queued) == ["in_transit", "mailed"]
    assert len({e["id"] for e in queued}) == 2
    assert {e["source_event_id"] for e in queued} == {"event_both_fields"}
    by_type = {e["type"]: e for e in queued}
    assert by_type["in_transit"]["occurred_at"] == "2024-05-03T22:00:00Z"
    assert by_type["in_transit"]["location"]["zip"] == "11201"
    assert by_type["mailed"]["location"]["zip"] is None
    # the provider's retry of the same event: both halves are duplicates
    assert_accepted(service.post_postgrid(event, fmt="json"), accepted=0, duplicates=2)
    assert service.stream_len() == 2


def test_updated_fields_as_a_list_of_names(service: Service) -> None:
    order = P.postgrid_order("postcard", status="printing")
    event = P.postgrid_event("postcard.updated", order, event_id="event_list_fields", updated_fields=["status"])
    assert_accepted(service.post_postgrid(event))
    assert [e["type"] for e in service.queued()] == ["printed"]


def test_created_event_maps_to_created(service: Service) -> None:
    event = P.postgrid_event("letter.created", P.postgrid_order("letter", status="ready"), event_id="event_created_1")
    assert_accepted(service.post_postgrid(event))
    assert [e["type"] for e in service.queued()] == ["created"]


def test_tracking_number_and_mailing_class_are_carried(service: Service) -> None:
    event = P.postgrid_status_update("letter", "processed_for_delivery", mailing_class="usps_certified",
                                     tracking_number="9407111899562018654321")
    assert_accepted(service.post_postgrid(event))
    [queued] = service.queued()
    assert queued["mailpiece"]["mailing_class"] == "usps_certified"
    assert queued["mailpiece"]["tracking_number"] == "9407111899562018654321"


def test_canadian_order_country(service: Service) -> None:
    to = P.postgrid_contact(country="CA", postal="M5V 3L9")
    event = P.postgrid_status_update("postcard", "processed_for_delivery", to=to)
    assert_accepted(service.post_postgrid(event))
    [queued] = service.queued()
    assert queued["mailpiece"]["country"] == "CA"
    assert queued["recipient"]["country"] == "CA"
    assert queued["type"] == "mailed"


def test_tracker_visit_is_purl_opened_on_the_order(service: Service) -> None:
    event = P.postgrid_tracker_visit("letter_3bRGpDXLeD6TeKD5GzHmPK")
    assert_accepted(service.post_postgrid(event))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == "purl_opened"
    assert queued["stage"] is None  # engagement is outside the lifecycle rank
    assert queued["mailpiece"]["id"] == "letter_3bRGpDXLeD6TeKD5GzHmPK"
    assert queued["mailpiece"]["kind"] == "letter"
    assert queued["occurred_at"] == "2024-05-09T18:30:00Z"
    # every visit is its own event; a different provider event id is not a duplicate
    assert_accepted(service.post_postgrid(P.postgrid_tracker_visit(event_id="event_tracker_visit_2")))
    assert service.stream_len() == 2


@pytest.mark.parametrize("event_type", ["letter.billed", "campaign.created", "webhook.test", "letter.deleted"])
def test_non_tracking_events_are_ignored(service: Service, event_type: str) -> None:
    event = P.postgrid_event(event_type, {"id": "campaign_123", "object": "campaign"}, event_id="event_other")
    assert_accepted(service.post_postgrid(event), accepted=0, ignored=1)
    assert service.stream_len() == 0


def test_unmapped_status_is_ignored(service: Service) -> None:
    event = P.postgrid_status_update("letter", "some_future_status")
    assert_accepted(service.post_postgrid(event), accepted=0, ignored=1)


# --- identity, formats, timestamps ------------------------------------------------------------------------


def test_same_event_same_id_across_requests_and_formats(service: Service) -> None:
    event = P.postgrid_status_update("letter", "printing", event_id="event_fmt_1")
    assert_accepted(service.post_postgrid(event, fmt="jwt"))
    service.clock.advance(60)
    assert_accepted(service.post_postgrid(event, fmt="json"), accepted=0, duplicates=1)
    assert_accepted(service.post_postgrid(event, fmt="json", millis=True), accepted=0, duplicates=1)
    [queued] = service.queued()
    assert queued["id"] == event_id("postgrid", "event_fmt_1", "printed")


@pytest.mark.parametrize("millis", [False, True], ids=["seconds", "milliseconds"])
def test_signature_timestamp_in_seconds_or_milliseconds(service: Service, millis: bool) -> None:
    event = P.postgrid_status_update("letter", "printing")
    assert_accepted(service.post_postgrid(event, fmt="json", millis=millis))


@pytest.mark.parametrize(("fmt", "millis"), [("jwt", False), ("json", False), ("json", True)],
                         ids=["jwt-iat", "json-t-seconds", "json-t-milliseconds"])
@pytest.mark.parametrize(("offset_hours", "ok"), [(-7, True), (-9, False), (7, True), (9, False)])
def test_default_tolerance_is_eight_hours(service: Service, fmt: str, millis: bool, offset_hours: float,
                                          ok: bool) -> None:
    """PostGrid retries after 1 h, 2 h and 4 h: a 7 h old signature passes, a 9 h old (or future) one does not."""
    event = P.postgrid_status_update("letter", "printing")
    resp = service.post_postgrid(event, fmt=fmt, millis=millis, timestamp=service.clock() + offset_hours * HOUR)
    if ok:
        assert_accepted(resp)
    else:
        assert_error(resp, 401, "timestamp_out_of_tolerance")
        assert service.stream_len() == 0


def test_configured_tolerance(make_service) -> None:
    svc = make_service({"sources": {"postgrid": {"tolerance": "10m"}}})
    event = P.postgrid_status_update("letter", "printing")
    assert_accepted(svc.post_postgrid(event, fmt="json", timestamp=svc.clock() - 9 * 60))
    assert_error(svc.post_postgrid(event, fmt="json", timestamp=svc.clock() - 11 * 60), 401,
                 "timestamp_out_of_tolerance")


# --- signatures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jwt", "json"])
def test_secret_rotation_either_secret_signs(service: Service, fmt: str) -> None:
    first = P.postgrid_status_update("letter", "printing", event_id="event_rot_1")
    second = P.postgrid_status_update("letter", "processed_for_delivery", event_id="event_rot_2")
    assert_accepted(service.post_postgrid(first, fmt=fmt, secret=PG_SECRETS[0]))
    assert_accepted(service.post_postgrid(second, fmt=fmt, secret=PG_SECRETS[1]))


@pytest.mark.parametrize("fmt", ["jwt", "json"])
def test_wrong_secret_is_401(service: Service, fmt: str) -> None:
    event = P.postgrid_status_update("letter", "printing")
    resp = service.post_postgrid(event, fmt=fmt, secret="not-the-configured-secret-0123456789")
    assert_error(resp, 401, "invalid_signature")
    assert service.stream_len() == 0


def test_tampered_json_body_is_401(service: Service) -> None:
    event = P.postgrid_status_update("letter", "printing")
    body, headers = signing.postgrid_json(event, PG_SECRETS[0], service.clock())
    tampered = body.replace(b'"printing"', b'"completed"')
    assert tampered != body
    assert_error(service.post("/webhooks/postgrid", tampered, headers), 401, "invalid_signature")


def test_json_signature_over_raw_bytes_not_reserialized(service: Service) -> None:
    """Whitespace is part of what is signed: pretty-printed JSON verifies when signed as sent."""
    event = P.postgrid_status_update("letter", "printing")
    import json

    body = json.dumps(event, indent=2).encode()
    _, headers = signing.postgrid_json(body, PG_SECRETS[0], service.clock())
    assert_accepted(service.post("/webhooks/postgrid", body, headers))


@pytest.mark.parametrize(
    "header",
    [None, "", "t=1714996800", "v1=abcdef", "garbage", "t=notanumber,v1=00", "t=inf,v1=00"],
    ids=["missing", "empty", "no-v1", "no-t", "garbage", "bad-t", "inf-t"],
)
def test_missing_or_malformed_signature_header_is_401(service: Service, header: str | None) -> None:
    body = signing.to_bytes(P.postgrid_status_update("letter", "printing"))
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["PostGrid-Signature"] = header
    assert_error(service.post("/webhooks/postgrid", body, headers), 401)
    assert service.stream_len() == 0


def test_x_postgrid_signature_header_is_not_accepted(service: Service) -> None:
    """Some public code checks `X-PostGrid-Signature`; the docs say `PostGrid-Signature`."""
    body, headers = signing.postgrid_json(P.postgrid_status_update("letter", "printing"), PG_SECRETS[0],
                                          service.clock())
    headers["X-PostGrid-Signature"] = headers.pop("PostGrid-Signature")
    assert_error(service.post("/webhooks/postgrid", body, headers), 401, "missing_signature")


def test_several_v1_signatures_one_valid(service: Service) -> None:
    body, headers = signing.postgrid_json(P.postgrid_status_update("letter", "printing"), PG_SECRETS[0],
                                          service.clock())
    headers["PostGrid-Signature"] = headers["PostGrid-Signature"].replace("v1=", "v1=" + "0" * 64 + ",v1=")
    assert_accepted(service.post("/webhooks/postgrid", body, headers))


# --- JWT specifics ----------------------------------------------------------------------------------------


def test_jwt_alg_none_is_401(service: Service) -> None:
    token = signing.forged_jwt(P.postgrid_status_update("letter", "printing"), {"alg": "none", "typ": "JWT"})
    assert_error(service.post("/webhooks/postgrid", token), 401)
    assert service.stream_len() == 0


def test_jwt_other_hmac_algorithm_is_401(service: Service) -> None:
    import jwt

    body = jwt.encode({**P.postgrid_status_update("letter", "printing"), "iat": int(service.clock())},
                      PG_SECRETS[0] + "-padding-for-hs512-key-length-0123456789", algorithm="HS512").encode()
    assert_error(service.post("/webhooks/postgrid", body), 401, "invalid_signature")


def test_jwt_rs256_header_is_401(service: Service) -> None:
    """Algorithm confusion: an RS256 header with an HMAC made from the shared secret must not pass."""
    import base64
    import hashlib
    import hmac

    event = P.postgrid_status_update("letter", "printing")
    unsigned = signing.forged_jwt(event, {"alg": "RS256", "typ": "JWT"}).rsplit(b".", 1)[0]
    mac = hmac.new(PG_SECRETS[0].encode(), unsigned, hashlib.sha256).digest()
    token = unsigned + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")
    assert_error(service.post("/webhooks/postgrid", token), 401)


@pytest.mark.parametrize("header", [{"alg": "HS256", "kid": 5}, {"alg": "HS256", "crit": ["exp"]}],
                         ids=["non-string-kid", "crit"])
def test_jwt_header_rejected_by_pyjwt_is_401_not_500(service: Service, header: dict) -> None:
    token = signing.forged_jwt(P.postgrid_status_update("letter", "printing"), header, b"x" * 32)
    assert_error(service.post("/webhooks/postgrid", token), 401, "invalid_token")


def test_jwt_expired_is_401(service: Service) -> None:
    event = P.postgrid_status_update("letter", "printing")
    now = service.clock()
    body = signing.postgrid_jwt(event, PG_SECRETS[0], exp=now - 9 * HOUR)
    assert_error(service.post("/webhooks/postgrid", body), 401, "timestamp_out_of_tolerance")
    body = signing.postgrid_jwt(event, PG_SECRETS[0], iat=now - 10 * HOUR, exp=now - 9 * HOUR)
    assert_error(service.post("/webhooks/postgrid", body), 401, "timestamp_out_of_tolerance")
    assert service.stream_len() == 0


def test_jwt_not_yet_valid_is_401(service: Service) -> None:
    body = signing.postgrid_jwt(P.postgrid_status_update("letter", "printing"), PG_SECRETS[0],
                                nbf=service.clock() + 9 * HOUR)
    assert_error(service.post("/webhooks/postgrid", body), 401, "timestamp_out_of_tolerance")


def test_jwt_time_claims_use_the_receiver_clock(service: Service) -> None:
    """exp is judged by the injected clock (2024), not the wall clock: a token valid then is accepted."""
    now = service.clock()
    body = signing.postgrid_jwt(P.postgrid_status_update("letter", "printing"), PG_SECRETS[0], iat=now,
                                exp=now + 300)
    assert_accepted(service.post("/webhooks/postgrid", body))


def test_jwt_retry_of_a_token_signed_an_hour_ago_passes(service: Service) -> None:
    """A retry (1 h later) of a token issued at the first attempt is inside the 8 h tolerance."""
    now = service.clock()
    body = signing.postgrid_jwt(P.postgrid_status_update("letter", "printing"), PG_SECRETS[0], iat=now - HOUR,
                                exp=now - HOUR + 300)
    assert_accepted(service.post("/webhooks/postgrid", body))


@pytest.mark.parametrize("claim", ["iat", "exp"])
def test_jwt_non_numeric_time_claim_is_401(service: Service, claim: str) -> None:
    import jwt

    event = P.postgrid_status_update("letter", "printing")
    body = jwt.encode({**event, claim: "yesterday"}, PG_SECRETS[0], algorithm="HS256").encode()
    assert_error(service.post("/webhooks/postgrid", body), 401, "invalid_token")


def test_jwt_event_nested_under_event_claim(service: Service) -> None:
    event = P.postgrid_status_update("letter", "printing", event_id="event_nested")
    body = signing.postgrid_jwt({"event": event}, PG_SECRETS[0], iat=service.clock())
    assert_accepted(service.post("/webhooks/postgrid", body))
    assert service.queued()[0]["source_event_id"] == "event_nested"


@pytest.mark.parametrize("body", [b"not-a-jwt", b"a.b", b"abc.def.ghi", b"\xff\xfe.\x00.\x01"])
def test_body_neither_jwt_nor_json_is_400(service: Service, body: bytes) -> None:
    assert_error(service.post("/webhooks/postgrid", body), 400, "invalid_body")


@pytest.mark.parametrize("t", ["inf", "1e400", "nan", "-1"])
def test_correctly_signed_absurd_timestamp_is_401_not_500(service: Service, t: str) -> None:
    body = signing.to_bytes(P.postgrid_status_update("letter", "printing"))
    header = f"t={t},v1={signing.hmac_hex(PG_SECRETS[0], t.encode() + b'.' + body)}"
    assert_error(service.post("/webhooks/postgrid", body, {"PostGrid-Signature": header}), 401, "invalid_timestamp")
