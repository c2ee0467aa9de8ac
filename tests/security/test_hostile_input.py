"""Hostile request bodies and values relayed onward.

Oversized bodies (declared or streamed), slow-loris bodies, deeply nested JSON, huge numbers, invalid
UTF-8, wrong content types; and event fields that try to become headers, or to move a CRM request to
another endpoint (`..` in a URL path segment), on their way to a destination.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from postrelay.adapters.base import DeliveryContext, path_segment
from postrelay.adapters.customerio import CustomerIOAdapter
from postrelay.adapters.hubspot import HubSpotAdapter
from postrelay.adapters.salesforce import SalesforceAdapter
from postrelay.adapters.webhook import WebhookAdapter
from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
from tests.receiver.harness import API_TOKEN, GENERIC_SECRETS, LOB_SECRETS, Service, assert_error
from tests.security.strategies import nested_text
from tests.support import payloads as P
from tests.support import signing
from tests.support.http_server import LocalHTTPServer, Reply
from tests.support.sink import RecordingSink


def _generic(service: Service, body: bytes, msg_id: str = "msg_hostile", content_type: str | None = "application/json"):
    headers = signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], msg_id, service.clock())
    if content_type is None:
        headers.pop("Content-Type")
    else:
        headers["Content-Type"] = content_type
    return service.post("/webhooks/generic", body, headers)


# --- size and time ----------------------------------------------------------------------------------------------


def test_oversized_declared_body_is_413_without_reading_it(make_service) -> None:
    svc = make_service({"server": {"max_body_bytes": 4096}})
    body = b"{" + b" " * 10_000 + b"}"
    assert_error(svc.post("/webhooks/lob", body, signing.lob_headers(body, LOB_SECRETS[0], svc.clock())), 413,
                 "body_too_large")
    assert svc.stream_len() == 0


def test_oversized_streamed_body_without_length_is_413(make_service) -> None:
    svc = make_service({"server": {"max_body_bytes": 4096}})

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    resp = svc.post("/webhooks/generic", chunks(), {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,x"})
    assert_error(resp, 413, "body_too_large")


def test_slow_loris_body_is_cut_at_the_body_timeout(make_service) -> None:
    svc = make_service({"server": {"body_timeout": "1s"}})
    port = int(svc.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\nLob-Signature: 00\r\nLob-Signature-Timestamp: 1\r\n\r\n{")
        started = time.monotonic()
        answer = b""
        for _ in range(40):  # one byte every 0.1 s: never idle long, never finished
            try:
                sock.sendall(b" ")
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.9 < took < 2.5, took


# --- shape of the JSON ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deeply_nested_json_is_400(service: Service, depth: int) -> None:
    body = signing.to_bytes(P.generic_event(metadata={"x": "__DEEP__"})).replace(b'"__DEEP__"',
                                                                                   nested_text(depth).encode())
    assert_error(_generic(service, body), 400, "invalid_json")
    assert service.stream_len() == 0


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"ids": NaN}',
                                  b'{"ids": ["\xff"]}'])
def test_operate_api_bodies_get_the_webhooks_json_errors(service: Service, body: bytes) -> None:
    """POST /v1/dlq/replay parses its body like a webhook: too deep, `NaN`, bad UTF-8 are 400, never 500."""
    resp = service.http.post("/v1/dlq/replay", content=body, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert_error(resp, 400, "invalid_json")


def test_operate_api_body_over_max_body_bytes_is_413(make_service) -> None:
    svc = make_service({"server": {"max_body_bytes": 4096}})
    body = b'{"ids": [' + b'"crm|x",' * 1000 + b'"crm|y"]}'
    resp = svc.http.post("/v1/dlq/replay", content=body, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert_error(resp, 413, "body_too_large")


@pytest.mark.parametrize("number", [b"1" * 5000, b"1e999999", b"-1e400", b"123456789" * 100])
def test_huge_numbers_never_500_and_what_is_accepted_is_readable(service: Service, number: bytes) -> None:
    body = signing.to_bytes(P.generic_event(metadata={"n": "__NUM__"})).replace(b'"__NUM__"', number)
    resp = _generic(service, body)
    assert resp.status_code in {200, 400}, resp.text
    for event in service.queued_events():  # a huge number stored must still parse back for the worker
        CanonicalEvent.model_validate_json(event.model_dump_json())


@pytest.mark.parametrize("body", [b'{"type": "\xff\xfe"}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}', "{}".encode("utf-16"),
                                  b'{"id": "\\ud800"}'])
def test_invalid_utf8_is_400(service: Service, body: bytes) -> None:
    lob = service.post("/webhooks/lob", body, signing.lob_headers(body, LOB_SECRETS[0], service.clock()))
    assert_error(lob, 400, "invalid_json")
    generic = service.post("/webhooks/generic", body, {"webhook-id": "m", "webhook-timestamp": str(int(service.clock())),
                                                       "webhook-signature": "v1,AAAA"})
    assert generic.status_code in {400, 401}
    assert service.stream_len() == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded", "application/json; charset=latin-1",
                                          "image/png", "\x00"])
def test_content_type_is_irrelevant_the_raw_signed_bytes_count(service: Service, content_type: str | None) -> None:
    """Providers are sloppy with Content-Type; the signature covers the raw bytes, so those decide."""
    if content_type == "\x00":
        content_type = "application/json"  # h11 refuses NUL client-side; keep the case for symmetry
    body = signing.to_bytes(P.generic_event())
    resp = _generic(service, body, content_type=content_type)
    assert resp.status_code == 200, resp.text
    garbage = _generic(service, b"a=1&b=2", msg_id="msg_form", content_type=content_type)
    assert_error(garbage, 400)


# --- values relayed onward --------------------------------------------------------------------------------------

HOSTILE = "Ada\r\nX-Injected: 1\r\n\r\nGET /admin HTTP/1.1"


def _event(**recipient: str) -> CanonicalEvent:
    # (a piece id with CR/LF is refused by the model itself since issue 18 §13: see test_hostile_inbound.py)
    return CanonicalEvent.build(source="lob", source_event_id="evt_inj", type="delivered",
                                occurred_at=P.NOW, mailpiece=Mailpiece(id="ltr_inj", kind="letter", campaign_id=HOSTILE),
                                recipient=Recipient(**recipient), metadata={"note": HOSTILE, HOSTILE: "k"})


def test_event_fields_never_become_headers_of_the_relayed_webhook() -> None:
    with RecordingSink() as sink, httpx.Client(timeout=5) as client:
        adapter = WebhookAdapter("hook", WebhookAdapter.Settings(url=f"{sink.url}/hook", headers={"X-Api-Key": "k"}),
                                 client)
        outcome = adapter.deliver(_event(name=HOSTILE, email=HOSTILE), DeliveryContext(destination="hook"))
    assert outcome.ok, outcome
    [req] = sink.records
    assert "x-injected" not in req.headers
    assert set(req.headers) >= {"webhook-id", "webhook-timestamp", "x-api-key"}
    assert req.path == "/hook"
    assert CanonicalEvent.model_validate_json(req.body).recipient.name == HOSTILE  # escaped inside the JSON body


@pytest.mark.parametrize("value", ["\r\n", "a\nb", "a\rb", "a\x00b", "é"])
def test_static_webhook_header_values_with_cr_lf_nul_are_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="header"):
        WebhookAdapter.Settings(url="https://example.test/hook", headers={"X-Api-Key": value})


def test_dot_segments_are_encoded() -> None:
    assert path_segment("..") == "%2E%2E" and path_segment(".") == "%2E"
    assert path_segment("a/../b") == "a%2F..%2Fb" and path_segment("a@b.c", safe="@") == "a@b.c"


@pytest.fixture
def vendor() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer(lambda req: Reply(404, {"message": "no"})) as srv:
        yield srv


@pytest.mark.parametrize("value", ["..", ".", "../../deals", "a/../../x", "x?y=1#z", "%2E%2E"])
def test_event_values_cannot_move_crm_requests_to_another_endpoint(vendor: LocalHTTPServer, value: str) -> None:
    """Regression: a recipient email or metadata id of `..` made httpx resolve the dot segment, e.g. HubSpot's
    PATCH /crm/v3/objects/contacts/.. went to /crm/v3/objects/, Customer.io's customer events to /api/v1/events."""
    event = CanonicalEvent.build(source="lob", source_event_id="evt_dot", type="delivered", occurred_at=P.NOW,
                                 mailpiece=Mailpiece(id="ltr_1", kind="letter"),
                                 recipient=Recipient(email=value), metadata={"crm_id": value, "cio_id": value})
    with httpx.Client(timeout=5) as client:
        adapters = [
            HubSpotAdapter("hs", HubSpotAdapter.Settings(token="hs-token", base_url=vendor.url), client),
            HubSpotAdapter("hs2", HubSpotAdapter.Settings(token="hs-token", base_url=vendor.url,
                                                          contact_id_field="crm_id"), client),
            SalesforceAdapter("sf", SalesforceAdapter.Settings(access_token="sf-token", instance_url=vendor.url,
                                                               external_id_field="Ext__c", external_id_metadata_key="crm_id"),
                              client),
            CustomerIOAdapter("cio", CustomerIOAdapter.Settings(site_id="site", api_key="key", base_url=vendor.url,
                                                                customer_id_key="cio_id"), client),
        ]
        for adapter in adapters:
            adapter.deliver(event, DeliveryContext(destination=adapter.name))
    assert vendor.requests
    prefixes = ("/crm/v3/objects/contacts/", "/services/data/", "/api/v1/customers/")
    for req in vendor.requests:
        assert req.path.startswith(prefixes), req.path
        assert "/../" not in req.path and not req.path.endswith(("/..", "/.")), req.path
        if req.path.startswith("/api/v1/customers/"):
            assert req.path.endswith("/events") and req.path.count("/") == 5, req.path
