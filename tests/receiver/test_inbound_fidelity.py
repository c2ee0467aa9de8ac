"""PostGrid, Postalytics and Standard Webhooks fidelity (issue 11 §1 §2 §7 §8), over real HTTP.

PostGrid orders come from PostGrid's API reference examples and the official `postgrid-python` SDK shapes
(tests/receiver/vendor/postgrid_examples.json); Postalytics bodies follow its documented four sections.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.receiver.harness import GENERIC_SECRETS, Service, assert_accepted, assert_canonical_shape, assert_error
from tests.support import payloads as P
from tests.support import signing

PG = json.loads((Path(__file__).parent / "vendor" / "postgrid_examples.json").read_text())


def pg_event(event_type: str, data: dict[str, Any], event_id: str, **extra: Any) -> dict[str, Any]:
    """An event as the SDK's `Event` type describes it: id, createdAt, live, object, type, data, updatedFields."""
    return {"id": event_id, "object": "event", "type": event_type, "live": False,
            "createdAt": "2024-05-06T14:00:00.000Z", "data": copy.deepcopy(data), **extra}


# --- PostGrid -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["letter", "postcard", "self_mailer", "cheque"])
def test_postgrid_reference_examples_are_accepted(service: Service, kind: str) -> None:
    order = PG[kind]
    assert_accepted(service.post_postgrid(pg_event(f"{kind}.created", order, f"event_ref_{kind}")))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == "created"
    assert queued["mailpiece"]["id"] == f"{kind}_123456"
    assert queued["mailpiece"]["mailing_class"] == "first_class"
    assert queued["recipient"]["name"] == "PostGrid"  # companyName: the example has no person
    assert queued["recipient"]["address_line1"] == "90 CANAL ST STE 600"
    assert queued["recipient"]["address_line2"] is None
    assert queued["recipient"]["country"] == "US"


def test_postgrid_address_line2_reaches_the_recipient(service: Service) -> None:
    order = copy.deepcopy(PG["letter"])
    order["to"]["addressLine2"] = "UNIT 4B"  # the SDK's Contact.address_line2 (alias addressLine2)
    assert_accepted(service.post_postgrid(pg_event("letter.created", order, "event_unit")))
    [queued] = service.queued()
    assert queued["recipient"]["address_line1"] == "90 CANAL ST STE 600"
    assert queued["recipient"]["address_line2"] == "UNIT 4B"


def test_postgrid_sdk_tracker_visit_names_its_order(service: Service) -> None:
    assert_accepted(service.post_postgrid(pg_event("tracker.visited", PG["tracker_visit"], "event_visit_sdk")))
    [queued] = service.queued()
    assert queued["type"] == "purl_opened"
    assert queued["mailpiece"]["id"] == "letter_123456"  # `orderID` of the SDK's tracker_visit
    assert queued["mailpiece"]["kind"] == "letter"
    assert queued["recipient"]["country"] is None  # a visit carries no address: filters read the piece (§3)
    assert queued["metadata"]["postrelay"]["tracker"] == "tracker_fHiKH2fBPA1Ttr5pFrRqss"


@pytest.mark.parametrize(("code", "expected"), [("US", "US"), ("ca", "CA"), ("CAN", "CA"), ("GBR", "GB"),
                                                ("Japan", "JP")])
def test_postgrid_country_codes_and_names(service: Service, code: str, expected: str) -> None:
    order = copy.deepcopy(PG["postcard"])
    order["to"]["countryCode"] = code
    assert_accepted(service.post_postgrid(pg_event("postcard.created", order, f"event_cc_{code}")))
    [queued] = service.queued()
    assert queued["mailpiece"]["country"] == expected


# --- Postalytics ----------------------------------------------------------------------------------------------


def postalytics_body(event_type: Any = 11, **overrides: Any) -> dict[str, Any]:
    """Postalytics' four sections: basic information, `to`, campaign/drop, `meta.fields`."""
    body: dict[str, Any] = {
        "mailId": "9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
        "eventDate": "2024-05-06T13:45:00",
        "expectedDeliveryDate": "2024-05-09",
        "eventType": event_type,
        "status": str(event_type),
        "statusDescription": "The mailpiece has been handed to the postal service",
        "retryAttempts": 0,
        "to": {"firstName": "Pierre", "lastName": "Tremblay", "address1": "290 Bremner Blvd",
               "address2": "Suite 1200", "city": "Toronto", "state": "ON", "zip": "M5V 3L9", "country": "Canada"},
        "campaignId": "118842",
        "campaignName": "Spring renewal",
        "dropId": "drop_77",
        "dropDate": "2024-05-01",
        "meta": {"fields": [{"name": "crm_id", "value": "C-42"}]},
    }
    body.update(overrides)
    return body


def test_postalytics_to_section_is_the_recipient(service: Service) -> None:
    assert_accepted(service.post_postalytics(postalytics_body()))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["recipient"] == {"name": "Pierre Tremblay", "email": None, "phone": None,
                                   "address_line1": "290 Bremner Blvd", "address_line2": "Suite 1200",
                                   "city": "Toronto", "region": "ON", "postal_code": "M5V 3L9", "country": "CA"}
    assert queued["mailpiece"]["country"] == "CA"
    assert queued["mailpiece"]["campaign_id"] == "118842"
    assert queued["metadata"]["crm_id"] == "C-42"
    detail = queued["metadata"]["postrelay"]
    assert (detail["campaign_name"], detail["drop_id"], detail["drop_date"]) == ("Spring renewal", "drop_77",
                                                                                "2024-05-01")


def test_postalytics_to_section_casing_and_campaign_object(service: Service) -> None:
    body = postalytics_body(To={"Name": "Ada Lovelace", "Address": "145 Mulberry St", "Address 2": "Apt 2",
                                "City": "San Francisco", "State": "CA", "Zip": "94107", "Country": "US"},
                            Campaign={"Id": "c-9", "Name": "Fall", "Drop": {"Id": "d-3", "Date": "2024-09-01"}})
    for key in ("to", "campaignId", "campaignName", "dropId", "dropDate"):
        del body[key]
    assert_accepted(service.post_postalytics(body))
    [queued] = service.queued()
    assert queued["recipient"]["name"] == "Ada Lovelace"
    assert queued["recipient"]["address_line2"] == "Apt 2"
    assert queued["recipient"]["country"] == "US"
    assert queued["mailpiece"]["campaign_id"] == "c-9"
    assert queued["metadata"]["postrelay"]["drop_id"] == "d-3"


def test_postalytics_older_recipient_spelling_still_works(service: Service) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(11)))
    [queued] = service.queued()
    assert queued["recipient"]["name"] == "Ada Lovelace" and queued["recipient"]["address_line2"] == "Apt 2"


@pytest.mark.parametrize("wording", ["Return to Sender", "Returned to Sender", "ReturnedToSender",
                                     "return_to_sender"])
def test_postalytics_status_wording(service: Service, wording: str) -> None:
    body = postalytics_body(None, status=wording)
    del body["eventType"]
    assert_accepted(service.post_postalytics(body))
    [queued] = service.queued()
    assert queued["type"] == "returned_to_sender"


# --- Standard Webhooks: svix-* header names -------------------------------------------------------------------


def svix_headers(body: bytes, msg_id: str, ts: float) -> dict[str, str]:
    std = signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], msg_id, ts)
    return {"Content-Type": "application/json", "svix-id": std["webhook-id"],
            "svix-timestamp": std["webhook-timestamp"], "svix-signature": std["webhook-signature"]}


def test_generic_accepts_svix_header_names(service: Service) -> None:
    body = signing.to_bytes(P.generic_event("delivered", piece_id="mp_svix"))
    resp = service.post("/webhooks/generic", body, svix_headers(body, "msg_svix_1", service.clock()))
    assert_accepted(resp)
    [queued] = service.queued()
    assert queued["source_event_id"] == "msg_svix_1"  # svix-id is the dedupe key, as webhook-id is
    assert_accepted(service.post("/webhooks/generic", body, svix_headers(body, "msg_svix_1", service.clock())),
                    accepted=0, duplicates=1)


def test_generic_svix_signature_is_still_checked(service: Service) -> None:
    body = signing.to_bytes(P.generic_event("delivered", piece_id="mp_svix"))
    headers = svix_headers(body, "msg_svix_2", service.clock())
    assert_error(service.post("/webhooks/generic", body + b" ", headers), 401, "invalid_signature")
    headers["svix-timestamp"] = str(int(service.clock()) - 3600)
    assert_error(service.post("/webhooks/generic", body, headers), 401)
    partial = {k: v for k, v in svix_headers(body, "m", service.clock()).items() if k != "svix-signature"}
    body_err = assert_error(service.post("/webhooks/generic", body, partial), 401, "missing_signature")
    assert "svix-signature" in body_err["detail"]
    assert service.stream_len() == 0
