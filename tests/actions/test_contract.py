"""What every action adapter promises: follow-up flags in the payload, no secrets in details, no raising."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from postrelay.adapters.base import Adapter
from postrelay.adapters.customerio import CustomerIOAdapter
from postrelay.adapters.klaviyo import KlaviyoAdapter
from postrelay.adapters.postgrid import PostGridAdapter
from postrelay.adapters.sendgrid import SendGridAdapter
from postrelay.adapters.twilio import TwilioAdapter
from tests.actions import build, dead_url, make_ctx, make_event
from tests.support.http_server import Recorded, Reply

SECRET = "s3cr3t-value-never-shown"

ACTIONS: dict[str, tuple[type[Adapter], dict[str, Any]]] = {
    "sendgrid": (SendGridAdapter, {"api_key": SECRET, "template_id": "d-1", "from_email": "a@b.example"}),
    "twilio": (TwilioAdapter, {"account_sid": "AC1", "auth_token": SECRET, "from_number": "+15550000000",
                               "body": "est={estimated} late={late}"}),
    "klaviyo": (KlaviyoAdapter, {"api_key": SECRET}),
    "customerio": (CustomerIOAdapter, {"site_id": "site", "api_key": SECRET}),
    "postgrid": (PostGridAdapter, {"api_key": SECRET, "kind": "postcard", "front_template": "f",
                                   "back_template": "b", "dedupe_search": False}),
}


def flags(req: Recorded) -> tuple[Any, Any]:
    """(estimated, late) wherever this vendor's request carries them."""
    if req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return req.form()["Body"][0], None
    body = req.json()
    for path in (("personalizations", 0, "dynamic_template_data"), ("data", "attributes", "properties"),
                 ("data",), ("metadata",)):
        node: Any = body
        try:
            for part in path:
                node = node[part]
        except (KeyError, IndexError, TypeError):
            continue
        if "estimated" in node:
            return node["estimated"], node["late"]
        if "postrelay_estimated" in node:
            return node["postrelay_estimated"], node["postrelay_late"]
    raise AssertionError(f"no estimated/late in {body}")


def echo_everything(status: int):
    def handler(req: Recorded) -> Reply:
        return Reply(status, {"echo": {"headers": req.headers, "body": req.body.decode(errors="replace")}})
    return handler


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_estimated_and_late_are_in_the_payload(client, serve, name: str) -> None:
    cls, settings = ACTIONS[name]
    server = serve(lambda req: Reply(201 if name == "twilio" else 202 if name in ("sendgrid", "klaviyo") else 200,
                                     {"id": "postcard_1", "sid": "SM1"}))
    outcome = build(cls, client, **settings, base_url=server.url).deliver(
        make_event(), make_ctx(estimated=True, late=True))
    assert outcome.ok, outcome.detail
    estimated, late = flags(server.requests[-1])
    if name == "twilio":
        assert estimated == "est=true late=true"
    else:
        assert estimated is True and late is True


@pytest.mark.parametrize("status", [400, 401, 500])
@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_secrets_never_in_detail(client, serve, name: str, status: int) -> None:
    cls, settings = ACTIONS[name]
    server = serve(echo_everything(status))
    adapter = build(cls, client, **settings, base_url=server.url)
    outcome = adapter.deliver(make_event(), make_ctx())
    assert outcome.status == ("retry" if status == 500 else "permanent")
    for secret in adapter.secrets():
        assert secret not in outcome.detail
    assert SECRET not in json.dumps(outcome.__dict__)


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_network_error_is_a_retry_not_an_exception(client, name: str) -> None:
    cls, settings = ACTIONS[name]
    outcome = build(cls, client, **settings, base_url=dead_url()).deliver(make_event(), make_ctx())
    assert outcome.status == "retry"
    assert SECRET not in outcome.detail


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_garbage_answers_do_not_raise(client, serve, name: str) -> None:
    cls, settings = ACTIONS[name]
    statuses = iter([200, 201, 202, 400, 429, 503])
    server = serve(lambda req: Reply(next(statuses), b"<html>not json</html>"))
    adapter = build(cls, client, **settings, base_url=server.url)
    for _ in range(6):
        assert adapter.deliver(make_event(), make_ctx()).status in ("ok", "retry", "permanent")


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_credentials_are_trimmed_and_checked(name: str) -> None:
    cls, settings = ACTIONS[name]
    secret_key = "auth_token" if name == "twilio" else "api_key"
    trimmed = cls.Settings(**{**settings, secret_key: f"  {SECRET}\n"})
    assert getattr(trimmed, secret_key) == SECRET
    for bad in ("", "two words", "caf\u00e9-key"):
        with pytest.raises(ValidationError):
            cls.Settings(**{**settings, secret_key: bad})
    with pytest.raises(ValidationError):
        cls.Settings(**settings, base_url="api.example.com")
    assert cls.Settings(**settings, base_url="http://127.0.0.1:9/").base_url == "http://127.0.0.1:9"
