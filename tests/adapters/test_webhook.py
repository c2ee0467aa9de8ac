"""Outbound webhook adapter against a loopback receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postrelay.adapters import adapter_class
from postrelay.adapters.base import DeliveryContext
from postrelay.adapters.client import relay_client
from postrelay.adapters.webhook import WebhookAdapter
from postrelay.core.config import parse_config
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
    assert outcome.status == "retry"  # Standard Webhooks: every non-2xx but 410 is retried on the schedule
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


@pytest.mark.parametrize("status", [300, 301, 304, 400, 401, 403, 404, 409, 413, 422, 451, 500, 502, 504, 599])
def test_every_non_2xx_but_410_retries_on_the_schedule(server: LocalHTTPServer, client, ctx, make_event,
                                                       status: int) -> None:
    server.handler = lambda req: Reply(status, {"error": "x"}, headers={"Retry-After": "7"})
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "retry", outcome.detail
    assert outcome.http_status == status and outcome.retry_after == 7
    assert outcome.detail.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(server: LocalHTTPServer, client, ctx, make_event, status: int) -> None:
    server.handler = lambda req: Reply(status, b"")
    outcome = make(server.url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.ok and outcome.http_status == status


def test_network_error_retries(closed_url: str, client, ctx, make_event) -> None:
    outcome = make(closed_url + "/hooks/catch", client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "network error" in outcome.detail


def test_timeout_retries(server: LocalHTTPServer, short_client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(200, {}, delay=0.6)
    outcome = make(server.url + "/hooks/catch", short_client).deliver(make_event(), ctx)
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
    assert outcome.status == "retry"
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



def test_default_timeout_is_15_seconds(server: LocalHTTPServer, ctx, make_event) -> None:
    """With no `timeout` of its own, a webhook waits the worker's [delivery].timeout: 15 s by default."""
    config = parse_config({"destinations": {"zap": {"type": "webhook", "url": server.url + "/hook"}},
                           "routes": [{"events": ["*"], "to": ["zap"]}]})
    assert config.delivery.timeout == 15.0
    assert WebhookAdapter.Settings(url="https://hooks.example.com/x").timeout is None
    with relay_client(config.delivery.timeout) as client:
        assert client.timeout.read == 15.0 and client.timeout.connect == 15.0


def key_of(length: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(65, 65 + length))).decode()


@pytest.mark.parametrize("length", [1, 16, 23, 65, 128])
def test_signing_keys_outside_24_to_64_bytes_are_refused(length: int) -> None:
    secret = key_of(length)
    with pytest.raises(ValidationError) as raised:
        WebhookAdapter.Settings(url="https://hooks.example.com/x", secret=secret)
    (error,) = raised.value.errors()
    assert error["loc"] == ("secret",)
    assert error["msg"] == (f"Value error, must be a Standard Webhooks key of 24 to 64 bytes (whsec_ + base64);"
                            f" this one has {length}")
    assert secret not in str(raised.value) and secret.removeprefix("whsec_") not in str(raised.value)


@pytest.mark.parametrize("length", [24, 32, 64])
def test_signing_keys_of_24_to_64_bytes_are_accepted(length: int) -> None:
    assert WebhookAdapter.Settings(url="https://hooks.example.com/x", secret=key_of(length)).secret == key_of(length)


def test_short_key_fails_check_config_naming_the_key_never_the_value(tmp_path) -> None:
    secret = key_of(16)
    config = tmp_path / "c.toml"
    config.write_text(f'[sources.generic]\nsecrets = ["{key_of(32)}"]\n\n'
                      f'[destinations.zap]\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n'
                      f'secret = "{secret}"\n\n[[routes]]\nevents = ["delivered"]\nto = ["zap"]\n')
    done = subprocess.run([str(Path(sys.executable).parent / "postrelay"), "check-config", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "destinations.zap" in output and "secret" in output and "24 to 64 bytes" in output
    assert secret not in output and secret.removeprefix("whsec_")[:12] not in output
    assert "Traceback" not in output


def followup_ctx(rule: str = "second_touch") -> DeliveryContext:
    return DeliveryContext(destination="zap", extra={
        "followup": rule, "trigger_event_id": None, "estimated": True, "late": False,
        "scheduled_for": "2025-03-10T13:59:00+00:00", "fired_at": "2025-03-10T14:00:00+00:00"})


def test_followup_has_its_own_webhook_id_and_says_it_is_a_followup(server: LocalHTTPServer, client, ctx,
                                                                    make_event) -> None:
    """A receiver deduplicating on webhook-id keeps the follow-up after it saw the trigger event itself."""
    seen: set[str] = set()
    kept: list[dict] = []

    def deduplicating(req: Recorded) -> Reply:
        verified = Webhook(SECRET).verify(req.body, req.headers)
        if req.headers["webhook-id"] not in seen:
            seen.add(req.headers["webhook-id"])
            kept.append(verified)
        return Reply(200, {})

    server.handler = deduplicating
    adapter, event = make(server.url + "/hooks/catch", client), make_event("delivered")
    assert adapter.deliver(event, ctx).ok  # the route's delivery of the event itself
    assert adapter.deliver(event, followup_ctx()).ok  # then the follow-up it triggered
    assert adapter.deliver(event, followup_ctx()).ok  # a retry of that follow-up
    assert adapter.deliver(event, followup_ctx("third_touch")).ok  # another rule on the same trigger

    ids = [r.headers["webhook-id"] for r in server.requests]
    assert ids[0] == event.id and ids[1] == ids[2] and len(set(ids)) == 3
    assert ids[1].startswith("fup_") and len(ids[1]) == 36
    assert len(kept) == 3 and "followup" not in kept[0]
    assert kept[0] == event.model_dump(mode="json")
    assert kept[1] == {**event.model_dump(mode="json"), "followup": {
        "rule": "second_touch", "trigger_event_id": event.id, "estimated": True, "late": False,
        "scheduled_for": "2025-03-10T13:59:00+00:00", "fired_at": "2025-03-10T14:00:00+00:00"}}
    assert kept[2]["followup"]["rule"] == "third_touch"
