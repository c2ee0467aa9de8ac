"""Helpers for the tracking-link tests: a receiver with `[links]` configured, minting and visiting."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from postrelay.core import keys
from tests.receiver.harness import API_TOKEN, Service

BASE_URL = "https://go.example.test"
LINKS = {"base_url": BASE_URL, "allowed_hosts": ["shop.example.com", "*.example.org"], "collapse_window": "30m"}
BROWSER = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.4 Mobile/15E148 Safari/604.1")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def links_service(make_service: Callable[..., Service]) -> Service:
    """A receiver with tracking links configured (clock at payloads.NOW)."""
    return make_service({"links": LINKS})


def mint(svc: Service, **spec: Any) -> dict[str, Any]:
    """POST /v1/links; asserts 201 and returns the answer."""
    spec.setdefault("target_url", "https://shop.example.com/offer")
    resp = svc.http.post("/v1/links", json=spec, headers=AUTH)
    assert resp.status_code == 201, resp.text
    return resp.json()


def visit(svc: Service, token: str, *, goal: bool = False, agent: str = BROWSER, method: str = "GET",
          headers: dict[str, str] | None = None) -> httpx.Response:
    """A browser's request to /t/{token} (or /goal); redirects are not followed."""
    path = f"/t/{token}/goal" if goal else f"/t/{token}"
    all_headers = {"User-Agent": agent, "Accept": "text/html,*/*", **(headers or {})}
    return svc.http.request(method, path, headers=all_headers, follow_redirects=False)


def visits_in_stream(svc: Service) -> list[dict[str, Any]]:
    """The link events (source `links`) queued in the ingest stream, oldest first."""
    return [e for e in svc.queued() if e["source"] == "links"]


def metric(svc: Service, name: str, **labels: str) -> float:
    """The value of one series in /metrics (0 when absent)."""
    text = svc.http.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def link_record(svc: Service, token: str) -> dict[str, Any]:
    """The stored record of a link."""
    return json.loads(svc.redis.get(keys.link(token)))


def as_json(resp: httpx.Response) -> Any:
    return json.loads(resp.text)


def apply_visits(svc: Service) -> None:
    """What the worker does with the queued events (links resolved, timelines), without deliveries."""
    from postrelay.workers.dispatcher import Dispatcher
    from postrelay.workers.executor import DeliveryExecutor
    from postrelay.workers.runtime import Runtime

    rt = Runtime(config=svc.config, redis=svc.redis)
    executor = DeliveryExecutor(lambda key, seq: None)
    try:
        d = Dispatcher(rt, [], executor, consumer="links-test", block_ms=10)
        d.reclaim()
        while d.run_once(block_ms=10):
            pass
    finally:
        executor.shutdown(timeout=5)
        assert rt.client is not None
        rt.client.close()
