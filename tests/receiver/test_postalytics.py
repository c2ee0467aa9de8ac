"""Postalytics webhooks over real HTTP: integer codes and names (design doc §4), meta.fields, Canada, dedupe, token."""

from __future__ import annotations

import pytest

from tests.receiver.harness import PA_TOKEN, PA_TOKEN_OLD, Service, assert_accepted, assert_canonical_shape, assert_error
from tests.support import payloads as P

# (integer eventType, status-code name, canonical type): NOT in lifecycle order, as Postalytics numbers them
CODES = [
    (0, "MailPieceCreated", "created"),
    (9, "Addressed", "addressed"),
    (10, "Printed", "printed"),
    (11, "Mailed", "mailed"),
    (4, "InTransit", "in_transit"),
    (5, "InLocalArea", "in_local_area"),
    (6, "ProcessedForDelivery", "processed_for_delivery"),
    (2, "ReRouted", "re_routed"),
    (3, "ReturnedToSender", "returned_to_sender"),
    (7, "pURLOpened", "purl_opened"),
    (8, "pURLCompleted", "purl_completed"),
]
CANADIAN_SET = [(0, "created"), (9, "addressed"), (10, "printed"), (11, "mailed"), (7, "purl_opened"),
                (8, "purl_completed")]


@pytest.mark.parametrize(("code", "name", "expected"), CODES, ids=[c[1] for c in CODES])
def test_integer_event_type(service: Service, code: int, name: str, expected: str) -> None:
    body = P.postalytics_event(code, status=name, event_date="2024-05-06T13:45:00")
    assert_accepted(service.post_postalytics(body))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == expected
    assert queued["source"] == "postalytics"
    assert queued["occurred_at"] == "2024-05-06T13:45:00Z"
    assert queued["mailpiece"]["id"] == "6d2a91c5-3f0b-4a43-9f4e-1b2c3d4e5f60"
    assert queued["mailpiece"]["campaign_id"] == "118842"
    assert queued["mailpiece"]["country"] == "US"
    assert queued["recipient"] == {"name": "Ada Lovelace", "email": "ada@example.com", "phone": None,
                                   "address_line1": "145 Mulberry St", "address_line2": "Apt 2",
                                   "city": "San Francisco", "region": "CA",
                                   "postal_code": "94107", "country": "US"}
    assert queued["metadata"]["postrelay"]["event_type"] == code
    assert queued["metadata"]["postrelay"]["expected_delivery_date"] == "2024-05-09"


@pytest.mark.parametrize(("code", "name", "expected"), CODES, ids=[c[1] for c in CODES])
def test_status_name_as_event_type(service: Service, code: int, name: str, expected: str) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(name)))
    assert [e["type"] for e in service.queued()] == [expected]


@pytest.mark.parametrize(("code", "name", "expected"), CODES, ids=[c[1] for c in CODES])
def test_digit_string_event_type(service: Service, code: int, name: str, expected: str) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(str(code))))
    assert [e["type"] for e in service.queued()] == [expected]


@pytest.mark.parametrize("spelling", ["Processed For Delivery", "processed_for_delivery", "PROCESSEDFORDELIVERY"])
def test_status_name_spellings(service: Service, spelling: str) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(spelling)))
    assert [e["type"] for e in service.queued()] == ["processed_for_delivery"]


def test_status_used_when_event_type_is_absent(service: Service) -> None:
    body = P.postalytics_event(6, status="InLocalArea")
    del body["eventType"]
    assert_accepted(service.post_postalytics(body))
    assert [e["type"] for e in service.queued()] == ["in_local_area"]


def test_error_status_is_failed(service: Service) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event("Error")))
    assert [e["type"] for e in service.queued()] == ["failed"]


@pytest.mark.parametrize("event_type", [1, 12, "None", "SomethingNew", "99"])
def test_unknown_codes_are_ignored(service: Service, event_type: object) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(event_type)), accepted=0, ignored=1)
    assert service.stream_len() == 0


@pytest.mark.parametrize("event_type", [True, 6.5, [6], {"id": 6}])
def test_event_type_of_wrong_kind_is_400(service: Service, event_type: object) -> None:
    assert_error(service.post_postalytics(P.postalytics_event(event_type)), 400, "invalid_payload")


def test_missing_mail_id_is_400(service: Service) -> None:
    body = P.postalytics_event(6)
    del body["mailId"]
    assert_error(service.post_postalytics(body), 400, "invalid_payload")


# --- meta.fields ----------------------------------------------------------------------------------------


def test_meta_fields_as_object(service: Service) -> None:
    fields = {"hubspot_contact_id": "51", "email": "ada@example.com", "segment": "vip"}
    assert_accepted(service.post_postalytics(P.postalytics_event(6, meta_fields=fields)))
    metadata = service.queued()[0]["metadata"]
    assert {k: metadata[k] for k in fields} == fields
    assert "postrelay" in metadata


def test_meta_fields_as_list_of_name_value_pairs(service: Service) -> None:
    fields = [{"name": "hubspot_contact_id", "value": "51"}, {"name": "segment", "value": "vip"},
              {"Name": "crm_deal", "Value": "D-9"}]
    assert_accepted(service.post_postalytics(P.postalytics_event(6, meta_fields=fields)))
    metadata = service.queued()[0]["metadata"]
    assert metadata["hubspot_contact_id"] == "51"
    assert metadata["segment"] == "vip"
    assert metadata["crm_deal"] == "D-9"


def test_lenient_casing_of_sections(service: Service) -> None:
    body = P.postalytics_event(6)
    body["Meta"] = {"Fields": {"crm_id": "7"}}
    body["Recipient"] = body.pop("recipient")
    body["MailID"] = body.pop("mailId")
    assert_accepted(service.post_postalytics(body))
    [queued] = service.queued()
    assert queued["metadata"]["crm_id"] == "7"
    assert queued["recipient"]["email"] == "ada@example.com"
    assert queued["mailpiece"]["id"] == "6d2a91c5-3f0b-4a43-9f4e-1b2c3d4e5f60"


# --- Canada ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), CANADIAN_SET)
@pytest.mark.parametrize("how", ["country-code", "country-name", "postal-code-only"])
def test_canadian_piece_with_the_reduced_set(service: Service, code: int, expected: str, how: str) -> None:
    recipient = dict(P.CANADIAN_RECIPIENT)
    if how == "country-code":
        recipient["country"] = "CA"
    elif how == "country-name":
        recipient["country"] = "Canada"
    body = P.postalytics_event(code, recipient=recipient, mail_id="ca-piece-1")
    assert_accepted(service.post_postalytics(body))
    [queued] = service.queued()
    assert queued["type"] == expected
    assert queued["mailpiece"]["country"] == "CA"
    assert queued["recipient"]["country"] == "CA"
    assert queued["recipient"]["postal_code"] == "M5V 3L9"


@pytest.mark.parametrize(("country", "expected"), [
    ("US", "US"), ("us", "US"), ("USA", "US"), ("United States", "US"), ("CAN", "CA"), ("Canada", "CA"),
    ("MEX", "MX"), ("Mexico", "MX"), ("AUT", "AT"), ("CHN", "CN"), ("IRL", "IE"), ("PRI", "PR"), ("GBR", "GB"),
    ("XYZ", None), ("Atlantis", None),
])
def test_country_names_and_alpha3_codes(service: Service, country: str, expected: str | None) -> None:
    """An alpha-3 code is not its first two letters (MEX is Mexico, not Montenegro); unknown means no country."""
    recipient = {"firstName": "Ada", "zip": "01000", "country": country}
    assert_accepted(service.post_postalytics(P.postalytics_event(11, recipient=recipient)))
    assert service.queued()[0]["mailpiece"]["country"] == expected


def test_us_zip_without_country_is_us(service: Service) -> None:
    recipient = {"firstName": "Ada", "zip": "94107-1234"}
    assert_accepted(service.post_postalytics(P.postalytics_event(11, recipient=recipient)))
    assert service.queued()[0]["mailpiece"]["country"] == "US"


# --- dedupe: (mailId, eventType, eventDate) -------------------------------------------------------------


def test_dedupe_key_is_mail_id_event_type_event_date(service: Service) -> None:
    first = P.postalytics_event(6, event_date="2024-05-06T13:45:00")
    assert_accepted(service.post_postalytics(first))
    retry = dict(first, retryAttempts=1, statusDescription="retried")
    assert_accepted(service.post_postalytics(retry), accepted=0, duplicates=1)
    same_by_name = dict(first, eventType="ProcessedForDelivery")
    assert_accepted(service.post_postalytics(same_by_name), accepted=0, duplicates=1)
    assert_accepted(service.post_postalytics(dict(first, eventDate="2024-05-06T18:00:00")))
    assert_accepted(service.post_postalytics(dict(first, eventType=5)))
    assert_accepted(service.post_postalytics(dict(first, mailId="another-piece")))
    assert service.stream_len() == 4


def test_repeated_purl_visits_are_not_duplicates(service: Service) -> None:
    for minute in range(3):
        assert_accepted(service.post_postalytics(P.postalytics_event(7, event_date=f"2024-05-10T09:0{minute}:00")))
    assert [e["type"] for e in service.queued()] == ["purl_opened"] * 3


def test_same_id_across_requests(service: Service) -> None:
    body = P.postalytics_event(4)
    assert_accepted(service.post_postalytics(body))
    first = service.queued()[0]["id"]
    service.redis.flushall()
    service.clock.advance(3600)
    assert_accepted(service.post_postalytics(body))
    assert service.queued()[0]["id"] == first


@pytest.mark.parametrize("event_date", ["5/6/2024 1:45:00 PM", "2024-05-06T13:45:00Z", "2024-05-06T09:45:00-04:00",
                                        "2024-05-06 13:45:00"])
def test_event_date_formats(service: Service, event_date: str) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(6, event_date=event_date)))
    assert service.queued()[0]["occurred_at"] == "2024-05-06T13:45:00Z"


# --- token ----------------------------------------------------------------------------------------------


def test_previous_token_still_accepted(service: Service) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(6), token=PA_TOKEN_OLD))


@pytest.mark.parametrize("token", ["wrong-token-0123456789", PA_TOKEN[:-1], PA_TOKEN + "x", PA_TOKEN.upper()])
def test_bad_token_is_401(service: Service, token: str) -> None:
    assert_error(service.post_postalytics(P.postalytics_event(6), token=token), 401, "invalid_token")
    assert service.stream_len() == 0


def test_missing_token_is_401(service: Service) -> None:
    resp = service.post("/webhooks/postalytics", b'{"mailId": "1", "eventType": 6}')
    assert_error(resp, 401, "missing_token")


def test_list_of_events(service: Service) -> None:
    body = [P.postalytics_event(11, event_date="2024-05-03T10:00:00"), P.postalytics_event(4),
            P.postalytics_event(1)]
    assert_accepted(service.post_postalytics(body), accepted=2, ignored=1)
