"""Outbound webhooks against the Standard Webhooks specification's reference implementation.

There is no OpenAPI document for a receiver we do not know: the contract is Standard Webhooks (header names,
`msg_id.timestamp.body` HMAC-SHA256, `v1,` signatures, a timestamp within 5 minutes), and its reference
library `standardwebhooks` verifies exactly that. Captured over loopback HTTP, for an event and a follow-up.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postrelay.adapters.base import DeliveryContext
from postrelay.adapters.client import relay_client
from postrelay.adapters.webhook import WebhookAdapter
from tests.actions import make_ctx
from tests.adapters.conftest import build_event
from tests.support.http_server import LocalHTTPServer

KEY = "whsec_" + base64.b64encode(b"conformance-signing-key-of-32-b!").decode()


@pytest.fixture(scope="module")
def receiver() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as server:
        yield server


@pytest.mark.parametrize(("name", "ctx"), [("event", DeliveryContext("zap")), ("followup", make_ctx())])
@pytest.mark.parametrize("secret", [KEY, None], ids=["signed", "unsigned"])
def test_webhook_requests_follow_standard_webhooks(receiver: LocalHTTPServer, name: str, ctx: DeliveryContext,
                                                   secret: str | None) -> None:
    event, server = build_event("delivered"), receiver
    server.requests.clear()
    with relay_client(5.0) as client:
        settings = WebhookAdapter.Settings(url=server.url + "/hook", secret=secret, headers={"X-Api-Key": "k-1"})
        assert WebhookAdapter("zap", settings, client).deliver(event, ctx).ok
    (request,) = server.requests
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "k-1"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 300
    assert request.headers["webhook-id"] == (event.id if name == "event" else request.headers["webhook-id"])
    if secret is None:
        assert "webhook-signature" not in request.headers
        return
    payload = Webhook(KEY).verify(request.body, request.headers)
    assert ("followup" in payload) is (name == "followup")
    tampered = {**request.headers, "webhook-id": request.headers["webhook-id"] + "x"}
    with pytest.raises(WebhookVerificationError):  # negative control: the verifier does check
        Webhook(KEY).verify(request.body, tampered)
