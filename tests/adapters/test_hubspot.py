"""HubSpot adapter against a loopback server that answers like the CRM v3 API."""

from __future__ import annotations

from urllib.parse import unquote

import httpx
import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters.base import DeliveryContext
from postrelay.adapters.hubspot import DEFAULT_PROPERTIES, HubSpotAdapter
from tests.support.http_server import LocalHTTPServer, Recorded, Reply

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CONTACT_PREFIX = "/crm/v3/objects/contacts/"


class FakeHubSpot:
    """Contacts by email and id, the custom properties that exist, and created activities."""

    def __init__(self) -> None:
        self.contacts = {"ada@example.com": "501", "o+mail@example.com": "502"}
        self.known_properties = set(DEFAULT_PROPERTIES.values())
        self.activities: list[tuple[str, dict]] = []

    def __call__(self, req: Recorded) -> Reply:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                               "message": "Authentication credentials not found."})
        if req.path.startswith(CONTACT_PREFIX) and req.method in {"PATCH", "GET"}:
            return self.contact(req, unquote(req.path.removeprefix(CONTACT_PREFIX)))
        if req.method == "POST" and req.path == "/crm/v3/objects/notes":
            return self.activity(req, "notes", "hs_note_body", 202)
        if req.method == "POST" and req.path == "/crm/v3/objects/postal_mail":
            return self.activity(req, "postal_mail", "hs_postal_mail_body", 453)
        return Reply(404, {"status": "error", "message": "unknown route"})

    def contact(self, req: Recorded, key: str) -> Reply:
        if req.query.get("idProperty") == ["email"]:
            contact_id = self.contacts.get(key)
        else:
            contact_id = key if key in self.contacts.values() else None
        if contact_id is None:
            return Reply(404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "resource not found"})
        if req.method == "GET":
            return Reply(200, {"id": contact_id, "properties": {}})
        properties = req.json().get("properties")
        if not isinstance(properties, dict) or not all(isinstance(v, str) for v in properties.values()):
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "Invalid input JSON"})
        unknown = set(properties) - self.known_properties
        if unknown:
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": f"Property values were not valid: {sorted(unknown)} does not exist"})
        return Reply(200, {"id": contact_id, "properties": properties})

    def activity(self, req: Recorded, kind: str, body_property: str, association_type: int) -> Reply:
        body = req.json()
        properties = body.get("properties", {})
        association = body["associations"][0]
        if (not properties.get("hs_timestamp") or not properties.get(body_property)
                or association["to"]["id"] not in self.contacts.values()
                or association["types"] != [{"associationCategory": "HUBSPOT_DEFINED",
                                             "associationTypeId": association_type}]):
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "bad activity"})
        self.activities.append((kind, body))
        return Reply(201, {"id": str(9000 + len(self.activities)), "properties": properties})


@pytest.fixture
def hubspot(server: LocalHTTPServer) -> FakeHubSpot:
    fake = FakeHubSpot()
    server.handler = fake
    return fake


def make(url: str, client: httpx.Client, **settings: object) -> HubSpotAdapter:
    return HubSpotAdapter("hubspot", HubSpotAdapter.Settings(**{"token": TOKEN, "base_url": url, **settings}),
                          client)


def test_registry_points_here() -> None:
    assert adapter_class("hubspot") is HubSpotAdapter


def test_updates_contact_by_email_and_logs_a_note(server, hubspot, client, ctx, make_event) -> None:
    event = make_event("processed_for_delivery")

    outcome = make(server.url, client).deliver(event, ctx)

    assert outcome.ok, outcome.detail
    assert outcome.remote_id == "9001"
    assert ctx.recall("activity") == "9001"
    patch, note = server.requests
    assert (patch.method, patch.path, patch.query) == ("PATCH", "/crm/v3/objects/contacts/ada@example.com",
                                                       {"idProperty": ["email"]})
    assert patch.json() == {"properties": {
        "postrelay_last_mail_event": "processed_for_delivery",
        "postrelay_mail_stage": "processed_for_delivery",
        "postrelay_mail_event_at": "2024-05-06T14:30:15.000Z",
        "postrelay_mail_campaign": "spring-24",
    }}
    (kind, body), = hubspot.activities
    assert kind == "notes"
    assert body["properties"]["hs_timestamp"] == "2024-05-06T14:30:15.000Z"
    assert body["properties"]["hs_note_body"].startswith("Mail out for delivery: letter ltr_123<br>")
    assert body["associations"][0]["to"] == {"id": "501"}
    assert note.headers["authorization"] == f"Bearer {TOKEN}"


def test_contact_id_from_metadata_wins(server, hubspot, client, ctx, make_event) -> None:
    event = make_event(metadata={"hubspot_contact_id": "502"})
    assert make(server.url, client).deliver(event, ctx).ok
    assert server.requests[0].path == "/crm/v3/objects/contacts/502"
    assert server.requests[0].query == {}
    assert hubspot.activities[0][1]["associations"][0]["to"] == {"id": "502"}


def test_email_is_escaped_in_the_path(server, hubspot, client, ctx, make_event) -> None:
    assert make(server.url, client).deliver(make_event(email="o+mail@example.com"), ctx).ok
    assert server.requests[0].path == "/crm/v3/objects/contacts/o%2Bmail@example.com"


def test_native_postal_mail_activity(server, hubspot, client, ctx, make_event) -> None:
    outcome = make(server.url, client, activity="postal_mail").deliver(make_event("delivered"), ctx)
    assert outcome.ok, outcome.detail
    (kind, body), = hubspot.activities
    assert kind == "postal_mail"
    assert "Mail delivered" in body["properties"]["hs_postal_mail_body"]


def test_activity_none_only_updates_the_contact(server, hubspot, client, ctx, make_event) -> None:
    outcome = make(server.url, client, activity="none").deliver(make_event(), ctx)
    assert outcome.ok
    assert outcome.remote_id == "501"
    assert [r.method for r in server.requests] == ["PATCH"]


def test_late_event_never_moves_stage_backwards(server, hubspot, client, ctx, make_event) -> None:
    late = make_event("mailed", stage="delivered")
    assert make(server.url, client).deliver(late, ctx).ok
    properties = server.requests[0].json()["properties"]
    assert properties["postrelay_mail_stage"] == "delivered"
    assert "postrelay_last_mail_event" not in properties
    assert "postrelay_mail_event_at" not in properties
    assert len(hubspot.activities) == 1


def test_engagement_event_keeps_the_stage(server, hubspot, client, ctx, make_event) -> None:
    assert make(server.url, client).deliver(make_event("purl_opened", stage="delivered"), ctx).ok
    properties = server.requests[0].json()["properties"]
    assert properties["postrelay_mail_stage"] == "delivered"
    assert properties["postrelay_last_mail_event"] == "purl_opened"


def test_custom_property_names(server, hubspot, client, ctx, make_event) -> None:
    hubspot.known_properties = {"mail_status"}
    assert make(server.url, client, properties={"stage": "mail_status"}).deliver(make_event(), ctx).ok
    assert server.requests[0].json() == {"properties": {"mail_status": "processed_for_delivery"}}


def test_empty_mapping_looks_the_contact_up(server, hubspot, client, ctx, make_event) -> None:
    assert make(server.url, client, properties={}).deliver(make_event(), ctx).ok
    assert [r.method for r in server.requests] == ["GET", "POST"]


def test_no_email_and_no_contact_id_is_permanent(server, hubspot, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email=None), ctx)
    assert outcome.status == "permanent"
    assert "no recipient email" in outcome.detail
    assert server.requests == []


def test_unknown_email_is_permanent(server, hubspot, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="nobody@example.com"), ctx)
    assert outcome.status == "permanent"
    assert outcome.http_status == 404
    assert outcome.detail == "no HubSpot contact with email nobody@example.com"
    assert hubspot.activities == []


def test_missing_property_is_permanent(server, hubspot, client, ctx, make_event) -> None:
    outcome = make(server.url, client, properties={"stage": "not_created_yet"}).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert outcome.http_status == 400
    assert "not_created_yet" in outcome.detail


def test_wrong_token_is_permanent(server, hubspot, client, ctx, make_event) -> None:
    adapter = HubSpotAdapter("hubspot", HubSpotAdapter.Settings(token="pat-wrong-token", base_url=server.url),
                             client)
    outcome = adapter.deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert outcome.http_status == 401
    assert "rejected the access token" in outcome.detail


def test_token_never_in_detail(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(400, {"message": f"bad request, auth was {req.headers['authorization']}"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert TOKEN not in outcome.detail
    assert "Bearer ***" in outcome.detail


def test_429_with_retry_after(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(429, {"status": "error", "policyName": "DAILY"}, headers={"Retry-After": "3"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.retry_after, outcome.http_status) == ("retry", 3, 429)


def test_429_ten_secondly_without_header_waits_the_window(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(429, {"status": "error", "errorType": "RATE_LIMIT",
                                             "policyName": "TEN_SECONDLY_ROLLING"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.retry_after) == ("retry", 10.0)


def test_500_retries(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(500, {"status": "error", "message": "internal error"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("retry", 500)


def test_network_error_retries(closed_url, client, ctx, make_event) -> None:
    outcome = make(closed_url, client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "network error" in outcome.detail


def test_timeout_retries(server, short_client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(200, {"id": "501"}, delay=0.6)
    outcome = make(server.url, short_client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "timeout" in outcome.detail


def test_rerun_never_logs_a_second_note(server, hubspot, client, ctx, make_event) -> None:
    adapter, event = make(server.url, client), make_event()
    first = adapter.deliver(event, ctx)
    calls = len(server.requests)
    second = adapter.deliver(event, ctx)
    assert first.ok and second.ok
    assert second.remote_id == first.remote_id
    assert len(hubspot.activities) == 1
    assert len(server.requests) == calls


def test_memo_persisted_by_worker_is_honoured(server, hubspot, client, make_event) -> None:
    saved: dict[str, str] = {}
    adapter, event = make(server.url, client), make_event()
    adapter.deliver(event, DeliveryContext("hubspot", _save=saved.__setitem__))
    rerun = DeliveryContext("hubspot", attempt=2, _memo=dict(saved))
    assert adapter.deliver(event, rerun).remote_id == saved["activity"]
    assert len(hubspot.activities) == 1


def test_retry_after_failed_note_creates_exactly_one(server, hubspot, client, ctx, make_event) -> None:
    failing = {"left": 1}

    def flaky(req: Recorded) -> Reply:
        if req.path.endswith("/notes") and failing["left"]:
            failing["left"] -= 1
            return Reply(503, {"message": "try later"})
        return hubspot(req)

    server.handler = flaky
    adapter, event = make(server.url, client), make_event()
    assert adapter.deliver(event, ctx).status == "retry"
    assert adapter.deliver(event, ctx).ok
    assert len(hubspot.activities) == 1


@pytest.mark.parametrize("settings", [
    {"token": TOKEN, "type": "hubspot"},
    {"token": ""},
    {"token": " \n"},
    {"token": "pat na1"},
    {"token": TOKEN, "activity": "email"},
    {"token": TOKEN, "properties": {"colour": "x"}},
    {"token": TOKEN, "properties": {"stage": "bad name"}},
    {"token": TOKEN, "base_url": "api.hubapi.com"},
])
def test_invalid_settings(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HubSpotAdapter.Settings(**settings)


def test_settings_defaults() -> None:
    settings = HubSpotAdapter.Settings(token=TOKEN + "\n", base_url="https://api.hubapi.com/")
    assert settings.token == TOKEN
    assert settings.base_url == "https://api.hubapi.com"
    assert settings.activity == "note"
    assert settings.properties == DEFAULT_PROPERTIES
    assert settings.contact_id_field == "hubspot_contact_id"
