"""Klaviyo action against a server that checks requests the way POST /api/events does."""

from __future__ import annotations

import json
from pathlib import Path

import phonenumbers
import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters.klaviyo import DEFAULT_REVISION, KlaviyoAdapter
from tests.actions import FIRED_AT, build, dead_url, make_ctx, make_event
from tests.support.http_server import Recorded, Reply

KEY = "pk_live_klaviyo_secret_1"
RETIRED_BEFORE = "2024-12-01"  # Klaviyo retires a revision two years after its release: 2024-10-15 is gone
STABLE = Path(__file__).parents[1] / "conformance" / "specs" / "klaviyo" / "stable.json"


def error(status: int, code: str, detail: str) -> Reply:
    return Reply(status, {"errors": [{"id": "e1", "status": status, "code": code, "title": code,
                                      "detail": detail}]})


def klaviyo_api(req: Recorded) -> Reply:
    """`Klaviyo-API-Key` auth, dated `revision` header, JSON:API event with metric + profile; 202."""
    if req.method != "POST" or req.path != "/api/events":
        return error(404, "not_found", "Not found")
    if req.headers.get("authorization") != f"Klaviyo-API-Key {KEY}":
        return error(401, "not_authenticated", f"Bad key: {req.headers.get('authorization')}")
    revision = req.headers.get("revision", "")
    if len(revision) < 10 or revision[4] != "-":
        return error(400, "invalid", "Missing or invalid revision header")
    if req.headers.get("content-type", "").split(";")[0] not in ("application/vnd.api+json", "application/json"):
        return error(415, "unsupported_media_type", "Unsupported media type")
    data = req.json().get("data", {})
    attrs = data.get("attributes", {})
    profile = attrs.get("profile", {}).get("data", {}).get("attributes", {})
    metric = attrs.get("metric", {}).get("data", {}).get("attributes", {})
    if data.get("type") != "event" or not metric.get("name") or not isinstance(attrs.get("properties"), dict):
        return error(400, "invalid", "event must have type, metric name and properties")
    if not (profile.get("email") or profile.get("phone_number") or profile.get("external_id")):
        return error(400, "invalid", "profile needs an identifier")
    phone = profile.get("phone_number")
    if phone is not None and not phonenumbers.is_valid_number(phonenumbers.parse(phone)):
        return error(400, "invalid", f"Invalid phone number format (Example of a valid format: +12345678901): {phone}")
    if revision < RETIRED_BEFORE:
        return error(410, "gone", f"API revision {revision} has been retired. Please use a newer revision.")
    return Reply(202, b"")


def settings(url: str, **extra: object) -> dict[str, object]:
    return {"api_key": KEY, "base_url": url, **extra}


def test_registered() -> None:
    assert adapter_class("klaviyo") is KlaviyoAdapter


def test_creates_event(client, serve) -> None:
    server = serve(klaviyo_api)
    event = make_event()
    outcome = build(KlaviyoAdapter, client, **settings(server.url)).deliver(event, make_ctx(late=True))
    assert outcome.status == "ok", outcome.detail
    req = server.requests[0]
    assert req.headers["revision"] == DEFAULT_REVISION
    assert req.headers["accept"] == "application/vnd.api+json"
    attrs = req.json()["data"]["attributes"]
    assert attrs["metric"]["data"] == {"type": "metric", "attributes": {"name": "second_touch"}}
    assert attrs["profile"]["data"] == {"type": "profile",
                                        "attributes": {"email": "jane@example.com", "phone_number": "+16175550123"}}
    assert attrs["properties"]["estimated"] is True and attrs["properties"]["late"] is True
    assert attrs["properties"]["mailpiece"]["id"] == "letter_abc"
    assert attrs["unique_id"] == f"{event.id}:second_touch" == outcome.remote_id
    assert attrs["time"] == FIRED_AT


def test_unique_id_is_deterministic_per_trigger_and_rule(client, serve) -> None:
    server = serve(klaviyo_api)
    adapter = build(KlaviyoAdapter, client, **settings(server.url))
    for ctx in (make_ctx(), make_ctx(attempt=2), make_ctx("third_touch")):
        assert adapter.deliver(make_event(), ctx).ok
    ids = [r.json()["data"]["attributes"]["unique_id"] for r in server.requests]
    assert ids[0] == ids[1] != ids[2]


def test_metric_setting_and_default_without_rule(client, serve) -> None:
    server = serve(klaviyo_api)
    assert build(KlaviyoAdapter, client, **settings(server.url, metric="Postcard Landed")).deliver(
        make_event(), make_ctx()).ok
    assert build(KlaviyoAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx(rule=None)).ok
    names = [r.json()["data"]["attributes"]["metric"]["data"]["attributes"]["name"] for r in server.requests]
    assert names == ["Postcard Landed", "Mail Delivered"]
    props = server.requests[1].json()["data"]["attributes"]["properties"]
    assert props["estimated"] is False and props["late"] is False


def test_phone_only_profile(client, serve) -> None:
    server = serve(klaviyo_api)
    event = make_event(recipient={"name": "J", "phone": "+44 20 7946 0958", "country": "GB"})
    assert build(KlaviyoAdapter, client, **settings(server.url)).deliver(event, make_ctx()).ok
    profile = server.requests[0].json()["data"]["attributes"]["profile"]["data"]["attributes"]
    assert profile == {"phone_number": "+442079460958"}


def test_no_identifier_is_permanent(client, serve) -> None:
    server = serve(klaviyo_api)
    outcome = build(KlaviyoAdapter, client, **settings(server.url)).deliver(
        make_event(recipient={"name": "J"}), make_ctx())
    assert outcome.status == "permanent" and server.requests == []


def test_revision_is_required_by_the_api(client, serve) -> None:
    server = serve(klaviyo_api)
    answer = client.post(f"{server.url}/api/events", json={"data": {}},
                         headers={"Authorization": f"Klaviyo-API-Key {KEY}"})
    assert answer.status_code == 400  # what happens without the header; the adapter always sends one
    with pytest.raises(ValidationError):
        KlaviyoAdapter.Settings(api_key=KEY, revision="")
    with pytest.raises(ValidationError):
        KlaviyoAdapter.Settings(api_key=KEY, revision="latest")
    assert KlaviyoAdapter.Settings(api_key=KEY, revision="2025-01-15.pre").revision == "2025-01-15.pre"


def test_429_500_and_network_retry(client, serve) -> None:
    replies = iter([Reply(429, {"errors": [{"code": "throttled"}]}, {"Retry-After": "12"}), Reply(502, b"bad")])
    server = serve(lambda req: next(replies))
    adapter = build(KlaviyoAdapter, client, **settings(server.url))
    first = adapter.deliver(make_event(), make_ctx())
    assert first.status == "retry" and first.retry_after == 12 and first.http_status == 429
    assert adapter.deliver(make_event(), make_ctx()).status == "retry"
    assert build(KlaviyoAdapter, client, **settings(dead_url())).deliver(make_event(), make_ctx()).status == "retry"


def test_bad_key_is_permanent_and_redacted(client, serve) -> None:
    server = serve(klaviyo_api)
    outcome = build(KlaviyoAdapter, client, **settings(server.url, api_key="pk_wrong_secret")).deliver(
        make_event(), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 401
    assert "pk_wrong_secret" not in outcome.detail and "***" in outcome.detail


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError):
        KlaviyoAdapter.Settings(api_key="k", event_name="x")


def test_default_revision_is_the_one_klaviyos_openapi_document_describes() -> None:
    spec = json.loads(STABLE.read_text())
    (header,) = [p for p in spec["paths"]["/api/events"]["post"]["parameters"] if p["name"] == "revision"]
    assert DEFAULT_REVISION == header["schema"]["default"] == spec["info"]["version"]
    assert KlaviyoAdapter.Settings(api_key=KEY).revision == DEFAULT_REVISION


def test_retired_revision_is_a_dead_letter_naming_it(client, serve) -> None:
    server = serve(klaviyo_api)
    outcome = build(KlaviyoAdapter, client, **settings(server.url, revision="2024-10-15")).deliver(
        make_event(), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 410
    assert outcome.detail.startswith("Klaviyo retired API revision 2024-10-15 (410 Gone): set `revision`")
    assert DEFAULT_REVISION in outcome.detail
    assert build(KlaviyoAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx()).ok


@pytest.mark.parametrize("phone", ["(555) 123-4567", "+1 555 123 4567", "12345", "not a phone", "+999 1234 5678"])
def test_invalid_phone_is_left_out_and_the_event_still_lands(client, serve, phone: str) -> None:
    server = serve(klaviyo_api)
    event = make_event(recipient={"name": "J", "email": "jane@example.com", "phone": phone, "country": "US"})
    outcome = build(KlaviyoAdapter, client, **settings(server.url)).deliver(event, make_ctx())
    assert outcome.ok, outcome.detail
    profile = server.requests[0].json()["data"]["attributes"]["profile"]["data"]["attributes"]
    assert profile == {"email": "jane@example.com"}


@pytest.mark.parametrize(("phone", "country", "expected"), [
    ("(617) 555-0123", "US", "+16175550123"),
    ("617.555.0123", None, "+16175550123"),
    ("+44 20 7946 0958", "US", "+442079460958"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("(416) 555-0199", "CA", "+14165550199"),
])
def test_valid_phones_are_sent_as_e164(client, serve, phone: str, country: str | None, expected: str) -> None:
    server = serve(klaviyo_api)
    event = make_event(recipient={"name": "J", "phone": phone, "country": country})
    assert build(KlaviyoAdapter, client, **settings(server.url)).deliver(event, make_ctx()).ok
    profile = server.requests[0].json()["data"]["attributes"]["profile"]["data"]["attributes"]
    assert profile == {"phone_number": expected}


def test_invalid_phone_and_no_email_is_permanent_without_a_call(client, serve) -> None:
    server = serve(klaviyo_api)
    outcome = build(KlaviyoAdapter, client, **settings(server.url)).deliver(
        make_event(recipient={"name": "J", "phone": "(555) 123-4567"}), make_ctx())
    assert outcome.status == "permanent" and server.requests == []
    assert outcome.detail == ("recipient has no email and phone '(555) 123-4567' is not a valid number:"
                              " nothing identifies a Klaviyo profile")
