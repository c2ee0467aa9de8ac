"""The worker's shared HTTP client: every outgoing request says it comes from postrelay and which version."""

from __future__ import annotations

import re
from importlib import metadata

from postrelay.adapters.base import DeliveryContext
from postrelay.adapters.client import relay_client
from postrelay.adapters.hubspot import HubSpotAdapter
from postrelay.adapters.webhook import WebhookAdapter
from postrelay.core.version import USER_AGENT
from tests.support.http_server import LocalHTTPServer, Reply


def test_every_request_carries_user_agent_postrelay_version(server: LocalHTTPServer, make_event) -> None:
    server.handler = lambda req: Reply(200, {"id": "1"})
    with relay_client(2.0) as client:
        WebhookAdapter("zap", WebhookAdapter.Settings(url=server.url + "/hook"), client).deliver(
            make_event(), DeliveryContext(destination="zap"))
        HubSpotAdapter("hs", HubSpotAdapter.Settings(token="pat-1", base_url=server.url), client).deliver(
            make_event(), DeliveryContext(destination="hs"))
    agents = [r.headers.get("user-agent") for r in server.requests]
    assert len(agents) == 3  # the webhook POST, HubSpot's contact PATCH and note POST
    assert set(agents) == {f"postrelay/{metadata.version('postrelay')}"} == {USER_AGENT}
    assert re.fullmatch(r"postrelay/\d+\.\d+\.\d+\S*", agents[0])
