"""SendGrid action against a server that checks requests the way /v3/mail/send does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters.sendgrid import SendGridAdapter
from tests.actions import build, dead_url, make_ctx, make_event
from tests.support.http_server import Recorded, Reply

KEY = "SG.secret-api-key-123"


def sendgrid_api(req: Recorded) -> Reply:
    """Bearer auth, JSON body, personalizations + template_id + from required; 202 + X-Message-Id."""
    if req.method != "POST" or req.path != "/v3/mail/send":
        return Reply(404, {"errors": [{"message": "not found"}]})
    if req.headers.get("authorization") != f"Bearer {KEY}":
        return Reply(401, {"errors": [{"message": "The provided authorization grant is invalid, expired, or "
                                       f"revoked (got {req.headers.get('authorization')})"}]})
    if not req.headers.get("content-type", "").startswith("application/json"):
        return Reply(415, {"errors": [{"message": "Content-Type should be application/json."}]})
    body = req.json()
    errors = [{"field": f, "message": f"The {f} parameter is required."}
              for f in ("personalizations", "template_id", "from") if not body.get(f)]
    if not errors and not all(p.get("to") for p in body["personalizations"]):
        errors.append({"field": "personalizations.0.to", "message": "The to array is required"})
    if errors:
        return Reply(400, {"errors": errors})
    return Reply(202, b"", {"X-Message-Id": "msg-abc123"})


def settings(url: str, **extra: object) -> dict[str, object]:
    return {"api_key": KEY, "template_id": "d-123", "from_email": "hello@brand.example",
            "from_name": "Brand", "base_url": url, **extra}


def test_registered() -> None:
    assert adapter_class("sendgrid") is SendGridAdapter


def test_sends_template_with_event_and_followup_data(client, serve) -> None:
    server = serve(sendgrid_api)
    adapter = build(SendGridAdapter, client, **settings(server.url))
    event = make_event()
    outcome = adapter.deliver(event, make_ctx(estimated=True, late=True))
    assert outcome.status == "ok", outcome.detail
    assert outcome.remote_id == "msg-abc123" and outcome.http_status == 202
    body = server.requests[0].json()
    assert body["template_id"] == "d-123"
    assert body["from"] == {"email": "hello@brand.example", "name": "Brand"}
    person = body["personalizations"][0]
    assert person["to"] == [{"email": "jane@example.com", "name": "Jane Q Public"}]
    data = person["dynamic_template_data"]
    assert data["estimated"] is True and data["late"] is True
    assert data["followup"] == "second_touch" and data["trigger_event_id"] == event.id
    assert data["recipient"]["name"] == "Jane Q Public"
    assert data["mailpiece"]["campaign_id"] == "spring" and data["metadata"]["offer"] == "10OFF"
    assert person["custom_args"] == {"postrelay_event_id": event.id, "postrelay_followup": "second_touch"}


def test_estimated_and_late_present_without_followup_extra(client, serve) -> None:
    server = serve(sendgrid_api)
    adapter = build(SendGridAdapter, client, **settings(server.url))
    assert adapter.deliver(make_event(estimated=True), make_ctx(rule=None)).ok
    data = server.requests[0].json()["personalizations"][0]["dynamic_template_data"]
    assert data["estimated"] is True and data["late"] is False


def test_fixed_recipient_address(client, serve) -> None:
    server = serve(sendgrid_api)
    adapter = build(SendGridAdapter, client, **settings(server.url, to="sales@brand.example"))
    assert adapter.deliver(make_event(recipient={"name": "No Email"}), make_ctx()).ok
    assert server.requests[0].json()["personalizations"][0]["to"] == [{"email": "sales@brand.example"}]


def test_recipient_without_email_is_permanent(client, serve) -> None:
    server = serve(sendgrid_api)
    adapter = build(SendGridAdapter, client, **settings(server.url))
    outcome = adapter.deliver(make_event(recipient={"name": "Jane"}), make_ctx())
    assert outcome.status == "permanent" and "no email" in outcome.detail
    assert server.requests == []


def test_memo_prevents_second_send(client, serve) -> None:
    server = serve(sendgrid_api)
    adapter = build(SendGridAdapter, client, **settings(server.url))
    saved: dict[str, str] = {}
    ctx = make_ctx()
    ctx._save = saved.__setitem__
    assert adapter.deliver(make_event(), ctx).ok
    assert saved == {"sent": "msg-abc123"}
    again = adapter.deliver(make_event(), make_ctx(memo=saved, attempt=2))  # a re-run with the stored memo
    assert again.ok and again.remote_id == "msg-abc123"
    assert len(server.requests) == 1


def test_429_with_retry_after_retries(client, serve) -> None:
    server = serve(lambda req: Reply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "7"}))
    outcome = build(SendGridAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx())
    assert outcome.status == "retry" and outcome.retry_after == 7 and outcome.http_status == 429


def test_429_falls_back_to_rate_limit_reset(client, serve) -> None:
    reset = str(int(time.time()) + 30)
    server = serve(lambda req: Reply(429, {"errors": []}, {"X-RateLimit-Reset": reset}))
    outcome = build(SendGridAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx())
    assert outcome.status == "retry" and 20 < (outcome.retry_after or 0) <= 30


def test_500_retries_and_does_not_memo(client, serve) -> None:
    server = serve(lambda req: Reply(500, {"errors": [{"message": "internal"}]}))
    ctx = make_ctx()
    outcome = build(SendGridAdapter, client, **settings(server.url)).deliver(make_event(), ctx)
    assert outcome.status == "retry" and ctx.recall("sent") is None


def test_unverified_sender_is_permanent_and_secret_is_redacted(client, serve) -> None:
    server = serve(sendgrid_api)
    adapter = build(SendGridAdapter, client, **settings(server.url, api_key="SG.wrong-key-999"))
    outcome = adapter.deliver(make_event(), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 401
    assert "SG.wrong-key-999" not in outcome.detail and "***" in outcome.detail


def test_network_error_retries(client) -> None:
    outcome = build(SendGridAdapter, client, **settings(dead_url())).deliver(make_event(), make_ctx())
    assert outcome.status == "retry" and "network error" in outcome.detail


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError):
        SendGridAdapter.Settings(api_key="k", template_id="d-1", from_email="a@b.c", subject="x")
    with pytest.raises(ValidationError):
        SendGridAdapter.Settings(api_key="k", template_id="d-1", from_email="a@b.c", to="nobody")
    assert SendGridAdapter.Settings(api_key="k", template_id="d-1", from_email="a@b.c").base_url == \
        "https://api.sendgrid.com"


@pytest.mark.parametrize("legacy", ["13b8f94f-bcae-4ec6-b752-70d6cb59f932", "d", "D-1", " "])
def test_a_legacy_template_id_is_refused(legacy: str) -> None:
    """SendGrid's mail/send document: dynamic_template_data "should be used in combination with a Dynamic
    Template, which can be identified by a `template_id` starting with `d-`"; a legacy one would go unfilled."""
    spec = json.loads((Path(__file__).parents[1] / "conformance/specs/sendgrid/tsg_mail_v3.json").read_text())
    assert "identified by a `template_id` starting with `d-`" in json.dumps(spec)
    with pytest.raises(ValidationError) as info:
        SendGridAdapter.Settings(api_key="k", template_id=legacy, from_email="a@b.c")
    assert "dynamic template id (d-" in str(info.value) and "13b8f94f" not in str(info.value)
