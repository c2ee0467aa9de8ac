"""Customer.io action against a server that checks requests the way the Track API does."""

from __future__ import annotations

import base64
import re
from datetime import datetime

import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters._payload import ulid_for
from postrelay.adapters.customerio import CustomerIOAdapter
from tests.actions import FIRED_AT, build, dead_url, make_ctx, make_event
from tests.support.http_server import Recorded, Reply

SITE, KEY = "site123", "cio-track-secret-key"
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
PATH = re.compile(r"^/api/v1/customers/([^/]+)/events$")


def customerio_api(req: Recorded) -> Reply:
    """Basic site_id:api_key, JSON body with `name`; 200 {}."""
    if req.method != "POST" or not PATH.match(req.path):
        return Reply(404, {"meta": {"error": "not found"}})
    expected = "Basic " + base64.b64encode(f"{SITE}:{KEY}".encode()).decode()
    if req.headers.get("authorization") != expected:
        return Reply(401, {"meta": {"error": f"Unauthorized request {req.headers.get('authorization')}"}})
    body = req.json()
    if not body.get("name"):
        return Reply(400, {"meta": {"error": "event name is required"}})
    reserved = {k: v for k, v in body.get("data", {}).items() if k in ("recipient", "from_address", "reply_to")}
    if any(not isinstance(v, str) for v in reserved.values()):
        return Reply(400, {"meta": {"error": f"data.{next(iter(reserved))} must be a string"}})
    return Reply(200, {})


def settings(url: str, **extra: object) -> dict[str, object]:
    return {"site_id": SITE, "api_key": KEY, "base_url": url, **extra}


def test_registered() -> None:
    assert adapter_class("customerio") is CustomerIOAdapter


def test_tracks_event_on_email_identified_person(client, serve) -> None:
    server = serve(customerio_api)
    outcome = build(CustomerIOAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx())
    assert outcome.status == "ok", outcome.detail
    req = server.requests[0]
    assert req.path == "/api/v1/customers/jane%40example.com/events"
    body = req.json()
    assert body["name"] == "second_touch"
    assert ULID.match(body["id"]) and outcome.remote_id == body["id"]
    assert body["timestamp"] == int(datetime.fromisoformat(FIRED_AT).timestamp())
    assert body["data"]["estimated"] is True and body["data"]["late"] is False
    assert body["data"]["mail_recipient"]["postal_code"] == "02110"
    assert "recipient" not in body["data"]  # reserved by Customer.io: only set when the user asks


def test_recipient_object_travels_as_mail_recipient_with_both_address_lines(client, serve) -> None:
    server = serve(customerio_api)
    who = {"name": "Jane", "email": "jane@example.com", "address_line1": "1 Main St", "address_line2": "Apt 4B",
           "city": "Boston", "region": "MA", "postal_code": "02110", "country": "US"}
    outcome = build(CustomerIOAdapter, client, **settings(server.url)).deliver(make_event(recipient=who), make_ctx())
    assert outcome.ok, outcome.detail
    data = server.requests[0].json()["data"]
    assert data["mail_recipient"] == {**who, "phone": None}
    assert "recipient" not in data


@pytest.mark.parametrize(("setting", "expected"), [
    ("email", "jane@example.com"),
    ("ops@brand.example", "ops@brand.example"),
    ("{{customer.email}}", "{{customer.email}}"),
])
def test_recipient_setting_sets_the_reserved_address(client, serve, setting: str, expected: str) -> None:
    server = serve(customerio_api)
    outcome = build(CustomerIOAdapter, client, **settings(server.url, recipient=setting)).deliver(
        make_event(), make_ctx())
    assert outcome.ok, outcome.detail
    data = server.requests[0].json()["data"]
    assert data["recipient"] == expected and data["mail_recipient"]["email"] == "jane@example.com"


def test_recipient_email_setting_without_an_email_leaves_it_out(client, serve) -> None:
    server = serve(customerio_api)
    adapter = build(CustomerIOAdapter, client, **settings(server.url, recipient="email", customer_id_key="crm_id"))
    assert adapter.deliver(make_event(recipient={"name": "J"}), make_ctx()).ok
    assert "recipient" not in server.requests[0].json()["data"]


def test_recipient_setting_must_be_an_address() -> None:
    with pytest.raises(ValidationError, match="must be \"email\""):
        CustomerIOAdapter.Settings(site_id="s", api_key="k", recipient="jane")


def test_customer_id_from_metadata_and_name_setting(client, serve) -> None:
    server = serve(customerio_api)
    adapter = build(CustomerIOAdapter, client, **settings(server.url, customer_id_key="crm_id", name="mail_landed"))
    assert adapter.deliver(make_event(), make_ctx()).ok
    assert server.requests[0].path == "/api/v1/customers/C-42/events"
    assert server.requests[0].json()["name"] == "mail_landed"
    # key configured but missing on this event: falls back to the email
    assert adapter.deliver(make_event(metadata={}), make_ctx()).ok
    assert server.requests[1].path == "/api/v1/customers/jane%40example.com/events"


def test_no_customer_id_is_permanent(client, serve) -> None:
    server = serve(customerio_api)
    adapter = build(CustomerIOAdapter, client, **settings(server.url, customer_id_key="crm_id"))
    outcome = adapter.deliver(make_event(recipient={"name": "J"}, metadata={}), make_ctx())
    assert outcome.status == "permanent" and "crm_id" in outcome.detail and server.requests == []


def test_dedupe_id_is_a_deterministic_ulid() -> None:
    when = datetime.fromisoformat(FIRED_AT)
    a, b = ulid_for("mev_1:rule", when), ulid_for("mev_1:rule", when)
    assert a == b and ULID.match(a) and a != ulid_for("mev_1:other", when)
    assert a[:10] == ulid_for("x", when)[:10]  # the time part sorts by firing time
    assert ulid_for("k", datetime.fromisoformat("2030-01-01T00:00:00+00:00")) > a


def test_same_event_id_on_retry(client, serve) -> None:
    server = serve(customerio_api)
    adapter = build(CustomerIOAdapter, client, **settings(server.url))
    assert adapter.deliver(make_event(), make_ctx()).ok
    assert adapter.deliver(make_event(), make_ctx(attempt=2)).ok
    assert server.requests[0].json()["id"] == server.requests[1].json()["id"]


def test_retryable_failures(client, serve) -> None:
    replies = iter([Reply(429, {}, {"Retry-After": "5"}), Reply(500, b"oops")])
    server = serve(lambda req: next(replies))
    adapter = build(CustomerIOAdapter, client, **settings(server.url))
    first = adapter.deliver(make_event(), make_ctx())
    assert first.status == "retry" and first.retry_after == 5
    assert adapter.deliver(make_event(), make_ctx()).status == "retry"
    assert build(CustomerIOAdapter, client, **settings(dead_url())).deliver(make_event(), make_ctx()).status == \
        "retry"


def test_bad_credentials_permanent_and_redacted(client, serve) -> None:
    server = serve(customerio_api)
    adapter = build(CustomerIOAdapter, client, **settings(server.url, api_key="wrong-cio-secret"))
    outcome = adapter.deliver(make_event(), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 401
    basic = base64.b64encode(f"{SITE}:wrong-cio-secret".encode()).decode()
    assert basic not in outcome.detail and "wrong-cio-secret" not in outcome.detail


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError):
        CustomerIOAdapter.Settings(site_id="s", api_key="k", region="eu")
