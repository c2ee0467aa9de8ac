"""Mailings harness: the real receiver (uvicorn on loopback), a worker runtime on the same Redis and clock,
and stand-ins for PostGrid and Lob that check every request against the provider's documented contract."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from postrelay.core.stores import mailings as store
from postrelay.workers.mailings import Creator
from postrelay.workers.runtime import Runtime
from tests.receiver.harness import API_TOKEN, Clock, Service, base_config, merge, start_service
from tests.support.providers import LobStandIn, PostGridStandIn
from tests.workers.conftest import clock, make_runtime

__all__ = ["clock", "make_runtime"]  # the worker suite's fixtures, for the follow-up tests
PG_KEY = "test_sk_mailings_0123456789abcdef"
LOB_KEY = "test_lobkey_0123456789abcdef"
READ_TOKEN = "read-only-token-0123456789abcdef"
TRIGGER_TOKEN = "trigger-token-0123456789abcdef"
SENDER = {"name": "Postrelay Shop", "address_line1": "20 Jay St", "address_line2": "Suite 210", "city": "Brooklyn",
          "region": "NY", "postal_code": "11201", "country": "US"}
ADA = {"name": "Ada Lovelace", "address_line1": "145 Mulberry St", "address_line2": "Apt 2", "city": "New York",
       "region": "NY", "postal_code": "10013", "country": "US", "email": "ada@example.com"}


def destinations(postgrid_url: str, lob_url: str) -> dict[str, Any]:
    """A postgrid and a lob destination with test keys and default templates/senders."""
    return {
        "pg": {"type": "postgrid", "api_key": PG_KEY, "base_url": postgrid_url, "front_template": "template_front1",
               "back_template": "template_back1", "from_contact": "contact_sender1"},
        "lob": {"type": "lob", "api_key": LOB_KEY, "base_url": lob_url, "front_template": "tmpl_front1",
                "back_template": "tmpl_back1", "from_address": SENDER},
    }


def mailing_config(redis_url: str, postgrid_url: str, lob_url: str, override: dict[str, Any] | None = None,
                   ) -> dict[str, Any]:
    """The receiver's base config plus both providers, fast retries and a read-only token."""
    data = merge(base_config(redis_url), {
        "server": {"tokens": [{"name": "viewer", "token": READ_TOKEN, "role": "read"}]},
        "delivery": {"timeout": "1s", "lease": "3s", "base_delay": "0.2s", "max_delay": "1s", "max_attempts": 5},
        "mailings": {"max_per_day": 100},
        "destinations": destinations(postgrid_url, lob_url),
    })
    return merge(data, override or {})


@dataclass
class Env:
    """Receiver, worker runtime and provider stand-ins sharing one Redis and one clock."""

    svc: Service
    rt: Runtime
    postgrid: PostGridStandIn
    lob: LobStandIn
    clock: Clock

    @property
    def redis(self) -> redis.Redis:
        return self.svc.redis

    def post_mailing(self, body: dict[str, Any], key: str | None = "key-1", token: str = API_TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.svc.http.post("/v1/mailings", json=body, headers=headers)

    def get_mailing(self, mid: str, token: str = READ_TOKEN) -> httpx.Response:
        return self.svc.http.get(f"/v1/mailings/{mid}", headers={"Authorization": f"Bearer {token}"})

    def fire(self, name: str, payload: Any, token: str = TRIGGER_TOKEN, **headers: str) -> httpx.Response:
        return self.svc.http.post(f"/v1/triggers/{name}", json=payload,
                                  headers={"Authorization": f"Bearer {token}", **headers})

    def work(self) -> int:
        """One pass of the creator over everything due now."""
        return Creator(self.rt).run_once()

    def due(self) -> list[tuple[str, float]]:
        return [(m.decode(), s) for m, s in self.redis.zrange(store.DUE, 0, -1, withscores=True)]


def mailing(provider: str = "pg", kind: str = "postcard", **extra: Any) -> dict[str, Any]:
    """A valid POST /v1/mailings body."""
    body: dict[str, Any] = {"provider": provider, "kind": kind, "to": dict(ADA),
                            "merge_variables": {"discount_code": "COMEBACK10"},
                            "metadata": {"hubspot_contact_id": "901", "deal_id": "D-17"}, "campaign_id": "winback"}
    if kind == "letter":
        body["template"] = "template_letter1" if provider == "pg" else "tmpl_letter1"
    return {**body, **extra}


@pytest.fixture
def postgrid() -> Iterator[PostGridStandIn]:
    with PostGridStandIn(PG_KEY) as server:
        yield server


@pytest.fixture
def lob() -> Iterator[LobStandIn]:
    with LobStandIn(LOB_KEY) as server:
        yield server


@pytest.fixture
def make_env(redis_url: str, postgrid: PostGridStandIn, lob: LobStandIn) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(override: dict[str, Any] | None = None) -> Env:
        clock = Clock()
        svc = start_service(redis_url, config_data=mailing_config(redis_url, postgrid.url, lob.url, override),
                            clock=clock)
        rt = Runtime(config=svc.config, redis=redis.Redis.from_url(redis_url), clock=clock)
        env = Env(svc, rt, postgrid, lob, clock)
        made.append(env)
        return env

    yield make
    for env in made:
        env.rt.close()
        env.svc.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()
