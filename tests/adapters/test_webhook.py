"""Outbound webhook adapter against a loopback receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import base64

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters import adapter_class
from adapters.webhook import WebhookAdapter
from tests.support.http_server import LocalHTTPServer, Recorded, Reply

SECRET = "whsec_" + base64.b64encode(b"postrelay-test-signing-key-32byt").decode()
API_KEY = "zap-key-0123456789abcdef"


def receiver(req: Recorded) -> Reply:
    """A catch hook that checks the API key and the signature, like a careful receiver does."""
    if req.method != "POST" or req.path != "/hooks/catch":
        return Reply(404, {"error": "not found"})
    if req.headers.get("x-api-key") != API_KEY:
        return Reply(401, {"error": "bad api key"})
    try:
        Webhook(SECRET).verify(req.body, req.headers)
    except WebhookVerificationError as exc:
        return Reply(400, {"error": str(exc)})
    return Reply(200, {"status": "success"})


def make(url: str, client: httpx.Client, **settings: object) -> WebhookAdapter:
    options = {"secret": SECRET, "headers": {"X-Api-Key": API_KEY}, **settings}
    return WebhookAdapter("zap", WebhookAdapter.Settings(url=url, **options), client)


def test_registry_points_here() -> None:
    assert adapter_class("webhook") is WebhookAdapter


def test_posts_the_canonical_event_signed(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = receiver
    event = make_event("delivered", estimated=True)

    outcome = make(server.url + "/hooks/catch", client).deliver(event, ctx)

    assert outcome.ok, outcome.detail
    assert outcome.http_status == 200
    (req,) = server.requests
    assert req.body == event.model_dump_json().encode()
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"] == event.id
    assert req.headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(req.body, req.headers) == event.model_dump(mode="json")


def test_webhook_id_is_stable_across_attempts(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = receiver
    adapter, event = make(server.url + "/hooks/catch", client), make_event()
    adapter.deliver(event, ctx)
    adapter.deliver(event, ctx)
    assert [r.headers["webhook-id"] for r in server.requests] == [event.id, event.id]


def test_without_secret_sends_no_signature(server: LocalHTTPServer, client, ctx, make_event) -> None:
    adapter = WebhookAdapter("n8n", WebhookAdapter.Settings(url=server.url + "/hook"), client)
    assert adapter.deliver(make_event(), ctx).ok
    (req,) = server.requests
    assert "webhook-signature" not in req.headers
    assert req.headers["webhook-id"]
    assert req.headers["webhook-timestamp"].isdigit()


def test_wrong_secret_is_refused_by_receiver(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = receiver
    other = "whsec_" + base64.b64encode(b"another-key-another-key-another!").decode()
    outcome = make(server.url + "/hooks/catch", client, secret=other).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert outcome.http_status == 400


def test_410_means_endpoint_disabled(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(410, {"error": "hook deleted"})
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert outcome.http_status == 410
    assert "disabled" in outcome.detail


def test_zapier_429_retries_after(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(429, {"status": "throttled"}, headers={"Retry-After": "12"})
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert outcome.retry_after == 12
    assert outcome.http_status == 429


@pytest.mark.parametrize(("status", "expected"), [(500, "retry"), (502, "retry"), (504, "retry"),
                                                  (400, "permanent"), (404, "permanent")])
def test_status_classification(server: LocalHTTPServer, client, ctx, make_event, status, expected) -> None:
    server.handler = lambda req: Reply(status, {"error": "x"})
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == expected
    assert outcome.http_status == status


def test_network_error_retries(closed_url: str, client, ctx, make_event) -> None:
    outcome = make(closed_url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "network error" in outcome.detail


def test_timeout_retries(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(200, {}, delay=0.6)
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "timeout" in outcome.detail


def test_settings_timeout_overrides_client(server: LocalHTTPServer, ctx, make_event) -> None:
    server.handler = lambda req: Reply(200, {}, delay=0.6)
    with httpx.Client(timeout=5.0) as slow_client:
        outcome = make(server.url + "/hooks/catch", slow_client, timeout=0.1).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "timeout" in outcome.detail


def test_secrets_never_in_detail(server: LocalHTTPServer, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(400, {"echo": dict(req.headers), "secret": SECRET})
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert API_KEY not in outcome.detail
    assert SECRET not in outcome.detail
    assert "***" in outcome.detail


@pytest.mark.parametrize("value", ["abc\r\nX-Injected: 1", "abc\ndef", "abc\rdef"])
def test_header_values_with_crlf_are_rejected(value: str) -> None:
    with pytest.raises(ValidationError, match="CR, LF"):
        WebhookAdapter.Settings(url="https://hooks.example.com/x", headers={"X-Api-Key": value})


def test_non_ascii_header_values_are_rejected() -> None:
    with pytest.raises(ValidationError, match="ASCII"):
        WebhookAdapter.Settings(url="https://hooks.example.com/x", headers={"X-Api-Key": "clé"})


@pytest.mark.parametrize("name", ["webhook-signature", "Content-Type", "Bad Header"])
def test_reserved_or_invalid_header_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        WebhookAdapter.Settings(url="https://hooks.example.com/x", headers={name: "v"})


@pytest.mark.parametrize("settings", [
    {"url": "ftp://example.com"},
    {"url": "https://example.com", "secret": "whsec_"},
    {"url": "https://example.com", "secret": "whsec_not base64!"},
    {"url": "https://example.com", "timeout": 0},
    {"url": "https://example.com", "rate_limit": "10/s"},
])
def test_invalid_settings(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WebhookAdapter.Settings(**settings)

