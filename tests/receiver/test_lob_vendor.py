"""Lob fidelity (issue 11 §2 §4 §5 §6 §7) fed from Lob's own published material (tests/receiver/vendor/lob/).

Every `event_type` id Lob lists is either mapped to a canonical type or in the ignore list that the README
states; Lob's example event, its certified tracking-event example and its country names go through the real
receiver over HTTP.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from postrelay.core.events import ENGAGEMENT, RANK, EventType
from postrelay.receiver.providers import lob
from postrelay.receiver.providers.countries import country_code
from tests.receiver.harness import Service, assert_accepted, assert_canonical_shape
from tests.support import payloads as P

VENDOR = Path(__file__).parent / "vendor"
README = Path(__file__).parents[2] / "docs" / "events.md"  # the provider mapping (moved out of README.md)


def lob_event_type_ids() -> list[str]:
    """Every id of Lob's `*_types.yml` enums plus the informed-delivery ids of Lob's events page."""
    ids: list[str] = []
    for path in sorted((VENDOR / "lob").glob("*_types.yml")):
        ids += yaml.safe_load(path.read_text())["enum"]
    ids += [line.strip() for line in (VENDOR / "lob" / "informed_delivery_types.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return ids


LOB_IDS = lob_event_type_ids()


def lob_example() -> dict[str, Any]:
    """Lob's published event example (`postcard.created`), exactly as in its OpenAPI description."""
    return yaml.safe_load((VENDOR / "lob" / "event_example.yml").read_text())["content"]["application/json"]["example"]


def test_the_vendor_list_is_complete_enough_to_mean_something() -> None:
    assert len(LOB_IDS) >= 90
    assert {"letter.rejected", "letter.certified.issue", "check.informed_delivery.email_clicked_through",
            "letter.return_envelope.re_routed", "bank_account.verified"} <= set(LOB_IDS)


@pytest.mark.parametrize("type_id", LOB_IDS)
def test_every_lob_event_type_is_mapped_or_listed_as_ignored(service: Service, type_id: str) -> None:
    resource = type_id.split(".")[0]
    body = P.lob_mailpiece(resource) if resource in lob.RESOURCES else {"id": "adr_0d8f2e0c1b", "object": resource}
    resp = service.post_lob(P.lob_event(type_id, body))
    assert resp.status_code == 200, resp.text
    counts = resp.json()
    action = type_id.split(".")[-1]
    if counts["ignored"]:
        # ignored only when the module's ignore list says so, and the README lists it
        assert resource in lob.IGNORED_RESOURCES or action in lob.IGNORED_ACTIONS, type_id
        assert f"`{resource}.*`" in readme_lob() or f"`{action}`" in readme_lob(), type_id
        assert service.stream_len() == 0
    else:
        assert counts == {"accepted": 1, "duplicates": 0, "ignored": 0}
        [queued] = service.queued()
        assert_canonical_shape(queued)
        assert queued["metadata"]["postrelay"]["provider_type"] == type_id


def readme_lob() -> str:
    text = README.read_text()
    start = text.index("- **Lob**")
    return text[start:text.index("- **Postalytics**", start)]


def test_readme_ignore_list_names_exactly_what_the_code_ignores() -> None:
    text = readme_lob()
    for action in sorted(lob.IGNORED_ACTIONS):
        assert f"`{action}`" in text
    for resource in sorted(lob.IGNORED_RESOURCES):
        assert f"`{resource}.*`" in text


def test_lobs_published_example_event_is_accepted_with_unit_and_country(service: Service) -> None:
    example = lob_example()
    assert_accepted(service.post_lob(example))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == "created"
    assert queued["source_event_id"] == "evt_d95ff8ffd2b5cfb4"
    assert queued["mailpiece"]["id"] == "psc_d2d10a2e9cba991c"
    assert queued["mailpiece"]["kind"] == "postcard"
    assert queued["recipient"] == {"name": "Harry Zhang", "email": None, "phone": None,
                                   "address_line1": "123 TEST ST", "address_line2": "UNIT 1",
                                   "city": "SAN FRANCISCO", "region": "CA", "postal_code": "94107", "country": "US"}
    assert queued["mailpiece"]["country"] == "US"  # "UNITED STATES"
    assert queued["occurred_at"] == "2016-12-04T22:50:08.180000Z"


def lob_country_names() -> list[str]:
    lines = (VENDOR / "lob_address_country.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_country_name_lob_sends_resolves() -> None:
    names = lob_country_names()
    assert len(names) > 200
    unresolved = [n for n in names if country_code(n) is None]
    assert unresolved == []
    spot = {"UNITED STATES": "US", "CANADA": "CA", "JAPAN": "JP", "KOREA, REPUBLIC OF": "KR",
            "KOREA (DEMOCRATIC PEOPLE\u2019S REPUBLIC OF)": "KP", "CÔTE D'IVOIRE": "CI", "CURAÇAO": "CW",
            "THE BAHAMAS": "BS", "TURKEY": "TR", "MACEDONIA": "MK", "VIET NAM": "VN", "HOLY SEE": "VA",
            "CONGO": "CG", "CONGO, DEMOCRATIC REPUBLIC OF THE": "CD", "NIGER": "NE", "NIGERIA": "NG",
            "GUINEA": "GN", "GUINEA-BISSAU": "GW", "DOMINICA": "DM", "DOMINICAN REPUBLIC": "DO",
            "SAINT HELENA": "SH", "SINT MAARTEN": "SX", "UNITED KINGDOM": "GB", "RUSSIAN FEDERATION": "RU"}
    assert {n: country_code(n) for n in spot} == spot


@pytest.mark.parametrize(("value", "expected"), [
    ("SOUTH KOREA", "KR"), ("South Korea", "KR"), ("KOR", "KR"), ("JPN", "JP"), ("MEX", "MX"), ("AUT", "AT"),
    ("USA", "US"), ("United States of America", "US"), ("Russia", "RU"), ("UK", "GB"), ("ST. LUCIA", "LC"),
    ("ca", "CA"), ("Deutschland", None), ("KOREA", None), ("Narnia", None),
])
def test_names_and_alpha3_codes_for_every_provider(value: str, expected: str | None) -> None:
    assert country_code(value) == expected


@pytest.mark.parametrize(("country", "code"), [("SOUTH KOREA", "KR"), ("JAPAN", "JP"), ("BRAZIL", "BR"),
                                               ("VIET NAM", "VN")])
def test_international_exit_gets_its_country(service: Service, country: str, code: str) -> None:
    body = P.lob_mailpiece("postcard", country=country, zip_code="04524",
                           tracking_events=[P.lob_tracking_event("International Exit", "2024-05-04T09:31:00.000Z")])
    assert_accepted(service.post_lob(P.lob_event("postcard.international_exit", body)))
    [queued] = service.queued()
    assert queued["mailpiece"]["country"] == code
    assert queued["recipient"]["country"] == code


@pytest.mark.parametrize("resource", ["letter", "postcard", "check", "self_mailer"])
def test_rejected_is_a_failure_with_its_reason(service: Service, resource: str) -> None:
    body = P.lob_mailpiece(resource)
    body["failure_reason"] = {"failure_reason": "invalid_address",
                              "remediation": "Verify the recipient address and resubmit."}
    assert_accepted(service.post_lob(P.lob_event(f"{resource}.rejected", body)))
    [queued] = service.queued()
    assert queued["type"] == "failed"
    assert queued["stage"] == "failed"
    assert queued["metadata"]["postrelay"]["reason"] == "invalid_address"
    assert queued["metadata"]["postrelay"]["remediation"] == "Verify the recipient address and resubmit."


@pytest.mark.parametrize(("extra", "reason"), [
    ({"error": {"message": "file is not a valid PDF", "status_code": 422}}, "file is not a valid PDF"),
    ({"error": "merge variable missing: name"}, "merge variable missing: name"),
    ({"errors": [{"message": "to.address_zip is required"}, {"message": "size is invalid"}]},
     "to.address_zip is required; size is invalid"),
    ({}, None),
])
def test_rejected_reason_from_any_of_lobs_shapes(service: Service, extra: dict, reason: str | None) -> None:
    body = {**P.lob_mailpiece("letter"), **extra}
    assert_accepted(service.post_lob(P.lob_event("letter.rejected", body)))
    [queued] = service.queued()
    assert queued["type"] == "failed"
    assert queued["metadata"]["postrelay"]["reason"] == reason


def certified_issue_scan(event: str, action_required: bool) -> dict[str, Any]:
    """Lob's certified tracking-event example, turned into an `Issue` scan with the given detail."""
    doc = yaml.safe_load((VENDOR / "lob" / "tracking_events_example.yml").read_text())
    scan = copy.deepcopy(doc["content"]["application/json"]["examples"]["certified"]["value"])
    scan.update(name="Issue", time="2024-05-04T09:31:00.000Z")
    scan["details"] = {"event": event, "description": "Package has been lost. Contact carrier for more details.",
                       "notes": "Missing mail search requested", "action_required": action_required}
    return scan


def test_certified_issue_keeps_its_detail(service: Service) -> None:
    body = P.lob_mailpiece("letter", tracking_events=[certified_issue_scan("package_lost", True)],
                           extra_service="certified")
    assert_accepted(service.post_lob(P.lob_event("letter.certified.issue", body)))
    [queued] = service.queued()
    assert queued["type"] == "re_routed"
    assert queued["metadata"]["postrelay"]["details"] == {
        "event": "package_lost", "description": "Package has been lost. Contact carrier for more details.",
        "notes": "Missing mail search requested", "action_required": True}


def test_certified_delivered_example_keeps_lobs_details(service: Service) -> None:
    """Lob's own certified `Delivered` scan (all_letters example) carries its `details` into the event."""
    doc = yaml.safe_load((VENDOR / "lob" / "all_letters_example.yml").read_text())
    letter = doc["content"]["application/json"]["example"]["data"][0]
    assert_accepted(service.post_lob(P.lob_event("letter.certified.delivered", letter)))
    [queued] = service.queued()
    assert queued["type"] == "delivered"
    assert queued["occurred_at"] == "2019-10-08T19:41:00Z"
    assert queued["location"] == {"zip": "33408"}
    assert queued["metadata"]["postrelay"]["details"] == {
        "event": "delivered", "description": "Package has been delivered.",
        "notes": "Delivered, Front Desk/Reception/Mail Room", "action_required": False}


@pytest.mark.parametrize(("action", "expected"), [("email_sent", "informed_delivery_sent"),
                                                  ("email_opened", "informed_delivery_opened"),
                                                  ("email_clicked_through", "informed_delivery_clicked")])
@pytest.mark.parametrize("resource", ["letter", "postcard", "self_mailer", "check"])
def test_informed_delivery_is_unranked_engagement(service: Service, resource: str, action: str, expected: str) -> None:
    body = P.lob_mailpiece(resource, tracking_events=[P.lob_tracking_event("In Transit", "2024-05-03T02:00:00.000Z")])
    assert_accepted(service.post_lob(P.lob_event(f"{resource}.in_transit", body, event_id="evt_transit_1")))
    assert_accepted(service.post_lob(P.lob_event(f"{resource}.informed_delivery.{action}", body)))
    applied = service.apply_queued()
    assert [e.type.value for e in applied] == ["in_transit", expected]
    assert EventType(expected) in ENGAGEMENT and EventType(expected) not in RANK
    piece = service.get_piece("lob", body["id"]).json()
    assert piece["stage"] == "in_transit"  # engagement never moves the stage
    assert [e["type"] for e in piece["events"]] == ["in_transit", expected]


def test_readme_lists_the_informed_delivery_types() -> None:
    text = README.read_text()
    for name in ("informed_delivery_sent", "informed_delivery_opened", "informed_delivery_clicked"):
        assert re.search(rf"`{name}`", text), name


def test_openapi_enums_know_the_new_types_and_the_read_api_conforms(service: Service) -> None:
    import jsonschema_rs  # (installed with schemathesis)

    doc = service.http.get("/openapi.json").json()
    schema = doc["components"]["schemas"]["Mailpiece"]
    assert set(schema["properties"]["events"]["items"]["properties"]["type"]["enum"]) == {t.value for t in EventType}
    body = P.lob_mailpiece("letter", piece_id="ltr_openapi_1")
    assert_accepted(service.post_lob(P.lob_event("letter.informed_delivery.email_opened", body)))
    assert_accepted(service.post_lob(P.lob_event("letter.rejected", body)))
    service.apply_queued()
    piece = service.get_piece("lob", "ltr_openapi_1").json()
    validator = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/Mailpiece",
                                                    "components": doc["components"]})
    assert validator.is_valid(piece), list(validator.iter_errors(piece))
    assert sorted(e["type"] for e in piece["events"]) == ["failed", "informed_delivery_opened"]
    assert not validator.is_valid({**piece, "stage": "informed_delivery_opened"})  # unranked: never a stage
    assert not validator.is_valid({**piece, "events": [{**piece["events"][0], "type": "teleported"}]})
