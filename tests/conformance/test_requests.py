"""Conformance: every request each adapter sends, captured over loopback HTTP, is valid for the vendor's own
OpenAPI document (or, where the vendor publishes none, for the documented shape in `documented/`).

Negative controls prove the validator is not a rubber stamp: the same captured requests, made wrong in one
way each (a body field of the wrong type, a missing required field, a typo'd key, no credentials, a wrong
path), are rejected.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest

from postrelay.adapters.client import relay_client
from tests.conformance import validator as v
from tests.conformance.cases import CASES, SID, Case
from tests.conformance.specs.prune import MANIFEST
from tests.support.http_server import LocalHTTPServer, Recorded

_captured: dict[str, list[Recorded]] = {}


@pytest.fixture(scope="module")
def vendor_server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as server:
        yield server


def capture(case: Case, server: LocalHTTPServer) -> list[Recorded]:
    """The requests `case` makes (cached per module run), asserting the delivery succeeded."""
    if case.id not in _captured:
        server.requests.clear()
        server.handler = case.answer
        with relay_client(5.0) as client:
            outcome = case.run(client, server.url)
        assert outcome.ok, f"{case.id}: {outcome.status} {outcome.detail}"
        _captured[case.id] = list(server.requests)
    return _captured[case.id]


def by_id(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_request_conforms_to_the_vendor_document(case: Case, vendor_server: LocalHTTPServer) -> None:
    requests = capture(case, vendor_server)
    assert requests, f"{case.id} sent nothing"
    for request in requests:
        assert case.vendor.problems(request) == [], f"{case.id}: {request.method} {request.path}"


def operation(vendor: v.Vendor, request: Recorded) -> tuple[str, str]:
    """(METHOD, path template) of the documented operation `request` matched."""
    for document in vendor.documents:
        spec = json.loads((v.HERE / document).read_text())
        base = spec["servers"][0]["url"].removeprefix(vendor.host)
        for template, item in spec["paths"].items():
            parts, actual = (base + template).strip("/").split("/"), request.path.strip("/").split("/")
            if len(parts) == len(actual) and request.method.lower() in item and all(
                    p == a or (p.startswith("{") and p.endswith("}")) for p, a in zip(parts, actual, strict=True)):
                return request.method, document + ":" + template
    raise AssertionError(f"{request.method} {request.path} matches no operation of {vendor.name}")


def test_every_documented_operation_is_exercised(vendor_server: LocalHTTPServer) -> None:
    """Each operation kept in the spec copies and documented shapes is sent by at least one case."""
    documented: set[tuple[str, str]] = set()
    vendors = {c.vendor.name: c.vendor for c in CASES}
    for vendor in vendors.values():
        for document in vendor.documents:
            spec = json.loads((v.HERE / document).read_text())
            documented |= {(m.upper(), f"{document}:{p}") for p, item in spec["paths"].items() for m in item
                           if m in {"get", "post", "patch", "put", "delete"}}
    sent = {operation(case.vendor, r) for case in CASES for r in capture(case, vendor_server)}
    assert documented - sent == set()
    copies = {f"specs/{name}" for name in MANIFEST}
    assert copies <= {d for vendor in vendors.values() for d in vendor.documents}


def test_official_documents_cover_every_vendor_that_publishes_one() -> None:
    assert {c.vendor.name for c in CASES if c.vendor.official} == {
        "HubSpot", "Pipedrive", "SendGrid", "Twilio", "Klaviyo", "Customer.io"}
    assert {c.vendor.name for c in CASES if not c.vendor.official} == {"PostGrid", "Salesforce"}


def test_tokens_travel_as_documented(vendor_server: LocalHTTPServer) -> None:
    """HubSpot's document secures these calls with OAuth2 only, Pipedrive's with an API key *or* OAuth2;
    openapi-core cannot check OAuth2, so: HubSpot's private app token goes as `Authorization: Bearer`
    (as an OAuth2 token does), Pipedrive's as `x-api-token` on every call."""
    for case in (c for c in CASES if c.vendor in (v.HUBSPOT, v.PIPEDRIVE)):
        for request in capture(case, vendor_server):
            if case.vendor is v.HUBSPOT:
                assert request.headers["authorization"] == f"Bearer {case.settings['token']}"
            else:
                assert request.headers["x-api-token"] == case.settings["token"]
                assert "authorization" not in request.headers


# ---------------------------------------------------------------------------------------------- negative controls

def json_body(request: Recorded, change: Callable[[Any], Any]) -> Recorded:
    body = copy.deepcopy(json.loads(request.body))
    result = change(body)
    return replace(request, body=json.dumps(body if result is None else result).encode())


def form_body(request: Recorded, change: Callable[[dict[str, str]], None]) -> Recorded:
    form = {k: v[0] for k, v in request.form().items()}
    change(form)
    return replace(request, body=urlencode(form).encode())


def without_header(request: Recorded, name: str) -> Recorded:
    return replace(request, headers={k: v for k, v in request.headers.items() if k != name})


def set_in(path: tuple[Any, ...], value: Any) -> Callable[[Any], None]:
    def change(body: Any) -> None:
        for part in path[:-1]:
            body = body[part]
        body[path[-1]] = value
    return change


def drop(path: tuple[Any, ...]) -> Callable[[Any], None]:
    def change(body: Any) -> None:
        for part in path[:-1]:
            body = body[part]
        del body[path[-1]]
    return change


BAD: list[tuple[str, str, int, Callable[[Recorded], Recorded]]] = [
    # (case, why it is wrong, which captured request, how to break it)
    ("customerio-by-email", "data.recipient as the recipient object (the bug of issue 11.9)", 0,
     lambda r: json_body(r, lambda b: b["data"].__setitem__("recipient", b["data"]["mail_recipient"]))),
    ("customerio-by-email", "timestamp as an ISO string", 0,
     lambda r: json_body(r, set_in(("timestamp",), "2025-03-10T14:00:00Z"))),
    ("customerio-by-email", "no name", 0, lambda r: json_body(r, drop(("name",)))),
    ("customerio-by-email", "no Basic credentials", 0, lambda r: without_header(r, "authorization")),
    ("klaviyo-email-and-phone", "profile without its data wrapper", 0,
     lambda r: json_body(r, lambda b: b["data"]["attributes"].__setitem__(
         "profile", b["data"]["attributes"]["profile"]["data"]["attributes"]))),
    ("klaviyo-email-and-phone", "event type misspelt", 0, lambda r: json_body(r, set_in(("data", "type"), "events"))),
    ("klaviyo-email-and-phone", "unique_id as a number", 0,
     lambda r: json_body(r, set_in(("data", "attributes", "unique_id"), 42))),
    ("klaviyo-email-and-phone", "no API key", 0, lambda r: without_header(r, "authorization")),
    ("klaviyo-email-and-phone", "properties as a list", 0,
     lambda r: json_body(r, set_in(("data", "attributes", "properties"), [1, 2]))),
    ("sendgrid-recipient-with-name", "personalizations missing", 0, lambda r: json_body(r, drop(("personalizations",)))),
    ("sendgrid-recipient-with-name", "to as a bare string", 0,
     lambda r: json_body(r, set_in(("personalizations", 0, "to"), "jane@example.com"))),
    ("sendgrid-recipient-with-name", "no bearer token", 0, lambda r: without_header(r, "authorization")),
    ("twilio-from-number", "no To", 0, lambda r: form_body(r, lambda f: f.pop("To"))),
    ("twilio-from-number", "an account SID that is not AC + 32 hex", 0,
     lambda r: replace(r, path=r.path.replace(SID_PATH, "/Accounts/ACnot-a-sid/"))),
    ("hubspot-note-by-email", "contact properties as a list", 0,
     lambda r: json_body(r, set_in(("properties",), [["postrelay_mail_stage", "x"]]))),
    ("hubspot-note-by-email", "note association without its types", 1,
     lambda r: json_body(r, drop(("associations", 0, "types")))),
    ("hubspot-postal-mail-by-id", "association target without an id", 1,
     lambda r: json_body(r, set_in(("associations", 0, "to"), {}))),
    ("pipedrive-search-then-activity", "search term missing", 0,
     lambda r: replace(r, query={k: val for k, val in r.query.items() if k != "term"})),
    ("pipedrive-search-then-activity", "done as a string", 1, lambda r: json_body(r, set_in(("done",), "yes"))),
    ("pipedrive-search-then-activity", "participant person_id as a string", 1,
     lambda r: json_body(r, set_in(("participants", 0, "person_id"), "7"))),
    ("pipedrive-note", "note without content", 1, lambda r: json_body(r, drop(("content",)))),
    ("pipedrive-note", "note person_id as a string", 1, lambda r: json_body(r, set_in(("person_id",), "7"))),
    ("postgrid-postcard-minimal", "a size PostGrid does not print", 0, lambda r: json_body(r, set_in(("size",), "4x6"))),
    ("postgrid-postcard-minimal", "to without countryCode", 0, lambda r: json_body(r, drop(("to", "countryCode")))),
    ("postgrid-postcard-minimal", "address line 2 misspelt", 0,
     lambda r: json_body(r, set_in(("to", "address_line2"), "Apt 4B"))),
    ("postgrid-letter-inline-sender-express", "letter without from", 1, lambda r: json_body(r, drop(("from",)))),
    ("postgrid-postcard-minimal", "no API key", 0, lambda r: without_header(r, "x-api-key")),
    ("salesforce-upsert-and-task", "Task WhoId that is not a record id", 1,
     lambda r: json_body(r, set_in(("WhoId",), "ada@example.com"))),
    ("salesforce-upsert-and-task", "Task ActivityDate with a time", 1,
     lambda r: json_body(r, set_in(("ActivityDate",), "2024-05-06T14:30:15Z"))),
    ("salesforce-email-update", "field value as a number", 1, lambda r: json_body(r, set_in(("Mail_Stage__c",), 80))),
    ("salesforce-email-update", "no bearer token", 0, lambda r: without_header(r, "authorization")),
]
SID_PATH = f"/Accounts/{SID}/"


@pytest.mark.parametrize(("case_id", "why", "index", "breaks"), BAD, ids=[f"{c}: {w}" for c, w, _, _ in BAD])
def test_validator_rejects_a_wrong_request(case_id: str, why: str, index: int, breaks: Callable[[Recorded], Recorded],
                                           vendor_server: LocalHTTPServer) -> None:
    case = by_id(case_id)
    good = capture(case, vendor_server)[index]
    assert case.vendor.problems(good) == []
    assert case.vendor.problems(breaks(good)) != [], why


@pytest.mark.parametrize("case_id", ["hubspot-note-by-email", "klaviyo-email-and-phone", "postgrid-postcard-minimal",
                                     "salesforce-email-update", "customerio-by-email"])
def test_validator_rejects_an_unknown_path_or_method(case_id: str, vendor_server: LocalHTTPServer) -> None:
    case = by_id(case_id)
    good = capture(case, vendor_server)[0]
    assert case.vendor.problems(replace(good, path=good.path + "/extra")) != []
    assert case.vendor.problems(replace(good, method="DELETE")) != []


def test_tolerated_defects_reject_any_value(vendor_server: LocalHTTPServer) -> None:
    """Customer.io's identifier `oneOf` rejects every identifier, so ignoring that one error hides nothing."""
    good = capture(by_id("customerio-by-email"), vendor_server)[0]
    strict = replace(v.CUSTOMERIO, defects=())
    for person in ("jane%40example.com", "C-42", "cio_03000001", "12345"):
        problems = strict.problems(replace(good, path=f"/api/v1/customers/{person}/events"))
        assert len(problems) == 1 and v.CUSTOMERIO_IDENTIFIER in problems[0] and "valid under each of" in problems[0]


def test_basic_credentials_are_the_configured_ones(vendor_server: LocalHTTPServer) -> None:
    """The validator checks a Basic header exists; the test checks it is `site_id:api_key` / `sid:token`."""
    for case in (c for c in CASES if c.vendor in (v.CUSTOMERIO, v.TWILIO)):
        user = case.settings.get("site_id") or case.settings["account_sid"]
        password = case.settings.get("api_key") or case.settings["auth_token"]
        for request in capture(case, vendor_server):
            assert request.headers["authorization"] == "Basic " + base64.b64encode(
                f"{user}:{password}".encode()).decode()
