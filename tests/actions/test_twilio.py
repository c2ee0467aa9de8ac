"""Twilio action against a server that checks requests the way the Messages API does."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters.twilio import TwilioAdapter
from tests.actions import build, dead_url, make_ctx, make_event
from tests.support.http_server import Recorded, Reply

SID, TOKEN = "AC0123456789abcdef", "twilio-auth-token-xyz"
INVALID, UNSUBSCRIBED = "+15005550001", "+15005550010"


def twilio_error(status: int, code: int, message: str) -> Reply:
    return Reply(status, {"code": code, "message": message, "status": status,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}"})


def twilio_api(req: Recorded) -> Reply:
    """Basic auth, form-encoded To/Body/From|MessagingServiceSid; 201 with the message SID."""
    if req.method != "POST" or req.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
        return twilio_error(404, 20404, "The requested resource was not found")
    expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    if req.headers.get("authorization") != expected:
        return twilio_error(401, 20003, f"Authenticate ({req.headers.get('authorization')})")
    if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return twilio_error(400, 21601, "Request body must be application/x-www-form-urlencoded")
    form = {k: v[0] for k, v in req.form().items()}
    if not form.get("To"):
        return twilio_error(400, 21604, "A 'To' phone number is required.")
    if not (form.get("From") or form.get("MessagingServiceSid")):
        return twilio_error(400, 21603, "A 'From' phone number is required.")
    if not form.get("Body"):
        return twilio_error(400, 21602, "Message body is required.")
    if form["To"] == INVALID or not form["To"].startswith("+"):
        return twilio_error(400, 21211, f"The 'To' number {form['To']} is not a valid phone number.")
    if form["To"] == UNSUBSCRIBED:
        return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
    return Reply(201, {"sid": "SM1234567890abcdef", "status": "queued", "to": form["To"], "body": form["Body"]})


def settings(url: str, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "account_sid": SID, "auth_token": TOKEN, "from_number": "+15557654321", "base_url": url,
        "body": "{recipient.name} got {mailpiece.campaign_id} (estimated={estimated}, late={late})",
    }
    return base | extra


def test_registered() -> None:
    assert adapter_class("twilio") is TwilioAdapter


def test_sends_form_encoded_sms(client, serve) -> None:
    server = serve(twilio_api)
    outcome = build(TwilioAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx(late=True))
    assert outcome.status == "ok", outcome.detail
    assert outcome.remote_id == "SM1234567890abcdef" and outcome.http_status == 201
    form = {k: v[0] for k, v in server.requests[0].form().items()}
    assert form == {"To": "+16175550123", "From": "+15557654321",
                    "Body": "Jane Q Public got spring (estimated=true, late=true)"}


def test_messaging_service_and_fixed_to(client, serve) -> None:
    server = serve(twilio_api)
    adapter = build(TwilioAdapter, client, **settings(server.url, from_number=None, to="+15550001111",
                                                      messaging_service_sid="MG123"))
    assert adapter.deliver(make_event(recipient={"name": "No Phone"}), make_ctx()).ok
    form = {k: v[0] for k, v in server.requests[0].form().items()}
    assert form["To"] == "+15550001111" and form["MessagingServiceSid"] == "MG123" and "From" not in form


def test_template_rendering_is_safe(client, serve) -> None:
    server = serve(twilio_api)
    body = "Hi {recipient.name}{unknown}{recipient.__class__}{metadata} {{literal}} {metadata.offer} {followup}"
    adapter = build(TwilioAdapter, client, **settings(server.url, body=body))
    assert adapter.deliver(make_event(), make_ctx()).ok
    assert server.requests[0].form()["Body"] == ["Hi Jane Q Public {literal} 10OFF second_touch"]


def test_empty_rendered_body_is_permanent(client, serve) -> None:
    server = serve(twilio_api)
    outcome = build(TwilioAdapter, client, **settings(server.url, body="{nothing}")).deliver(
        make_event(), make_ctx())
    assert outcome.status == "permanent" and server.requests == []


def test_recipient_without_phone_is_permanent(client, serve) -> None:
    server = serve(twilio_api)
    adapter = build(TwilioAdapter, client, **settings(server.url))
    outcome = adapter.deliver(make_event(recipient={"name": "Jane"}), make_ctx())
    assert outcome.status == "permanent" and "no phone" in outcome.detail
    outcome = adapter.deliver(make_event(recipient={"name": "Jane", "phone": "12"}), make_ctx())
    assert outcome.status == "permanent" and "not a valid" in outcome.detail
    assert server.requests == []


@pytest.mark.parametrize(("to", "code"), [(INVALID, 21211), (UNSUBSCRIBED, 21610)])
def test_invalid_or_unsubscribed_number_is_permanent(client, serve, to: str, code: int) -> None:
    server = serve(twilio_api)
    adapter = build(TwilioAdapter, client, **settings(server.url))
    outcome = adapter.deliver(make_event(recipient={"name": "J", "phone": to}), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 400
    assert f"twilio error {code}" in outcome.detail


def test_20429_with_retry_after_retries(client, serve) -> None:
    server = serve(lambda req: Reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429},
                                     {"Retry-After": "3"}))
    outcome = build(TwilioAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx())
    assert outcome.status == "retry" and outcome.retry_after == 3 and "20429" in outcome.detail


def test_code_20429_retries_whatever_the_status(client, serve) -> None:
    server = serve(lambda req: Reply(400, {"code": 20429, "message": "Too Many Requests", "status": 400}))
    outcome = build(TwilioAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx())
    assert outcome.status == "retry"


def test_500_and_network_error_retry(client, serve) -> None:
    server = serve(lambda req: Reply(503, b"upstream unavailable"))
    assert build(TwilioAdapter, client, **settings(server.url)).deliver(make_event(), make_ctx()).status == "retry"
    outcome = build(TwilioAdapter, client, **settings(dead_url())).deliver(make_event(), make_ctx())
    assert outcome.status == "retry" and "network error" in outcome.detail


def test_memo_prevents_second_send(client, serve) -> None:
    server = serve(twilio_api)
    adapter = build(TwilioAdapter, client, **settings(server.url))
    ctx = make_ctx()
    assert adapter.deliver(make_event(), ctx).ok
    assert ctx.recall("sent") == "SM1234567890abcdef"
    assert adapter.deliver(make_event(), ctx).remote_id == "SM1234567890abcdef"
    assert len(server.requests) == 1


def test_wrong_token_is_permanent_and_credentials_redacted(client, serve) -> None:
    server = serve(twilio_api)
    adapter = build(TwilioAdapter, client, **settings(server.url, auth_token="another-secret-token"))
    outcome = adapter.deliver(make_event(), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 401
    basic = base64.b64encode(f"{SID}:another-secret-token".encode()).decode()
    assert "another-secret-token" not in outcome.detail and basic not in outcome.detail


def test_settings_validation() -> None:
    with pytest.raises(ValidationError):
        TwilioAdapter.Settings(account_sid=SID, auth_token=TOKEN, body="x")  # no sender
    with pytest.raises(ValidationError):
        TwilioAdapter.Settings(account_sid=SID, auth_token=TOKEN, body="x", from_number="+1", to="555-1234")
    with pytest.raises(ValidationError):
        TwilioAdapter.Settings(account_sid=SID, auth_token=TOKEN, body="x", from_number="+1", media_url="u")
