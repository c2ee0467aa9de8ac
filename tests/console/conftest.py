"""Console fixtures: a receiver with read and operate tokens, a loopback CRM destination whose answers the test
controls, a real `postrelay worker` process, and events fed through the ingest stream as webhooks leave them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, Location, Mailpiece, Recipient
from tests.receiver.harness import API_TOKEN, Service, base_config, make_service, merge, start_service
from tests.support.http_server import LocalHTTPServer, Recorded, Reply
from tests.support.processes import WorkerProcess, wait_for, write_config
from tests.support.signing import make_whsec

READ_TOKEN = "console-read-token-0123456789"
OPERATE_TOKEN = "console-operate-token-0123456789"
T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
CRM_SECRET = make_whsec(b"console-crm-secret")


class Crm:
    """The destination: answers 410 (permanent for a webhook) while `failing`, else 200; records what arrived."""

    def __init__(self) -> None:
        self.failing = False
        self.server = LocalHTTPServer(self._answer)

    def _answer(self, req: Recorded) -> Reply:
        return Reply(410, {"error": "contact locked"}) if self.failing else Reply(200, {"id": "crm_1"})

    def received(self) -> list[dict[str, Any]]:
        """The canonical events delivered (webhook bodies), in arrival order."""
        return [r.json() for r in self.server.requests]


def console_config(redis_url: str, crm_url: str, **override: Any) -> dict[str, Any]:
    """Every source, an operate and a read token, one webhook destination for every event, one follow-up rule."""
    data = merge(base_config(redis_url), {
        "server": {"tokens": [{"name": "ops", "token": OPERATE_TOKEN, "role": "operate"},
                              {"name": "viewer", "token": READ_TOKEN, "role": "read"}]},
        "destinations": {"crm": {"type": "webhook", "url": crm_url, "secret": CRM_SECRET}},
        "routes": [{"events": ["*"], "to": ["crm"]}],
        "followups": [{"name": "nudge", "after": "processed_for_delivery", "delay": "1000 days",
                       "unless": ["purl_opened"], "do": "crm"}],
        "delivery": {"base_delay": 1, "max_delay": 5, "circuit_threshold": 100},
    })
    return merge(data, override)


def piece_event(piece: str, etype: str, days: float, *, campaign: str = "spring", name: str = "Ada Lovelace",
                email: str | None = None, country: str = "US", zip_code: str | None = "10013",
                source: str = "lob", sid: str | None = None) -> CanonicalEvent:
    """A canonical event of `piece`, `days` after T0."""
    return CanonicalEvent.build(
        source=source, source_event_id=sid or f"evt_{piece}_{etype}_{days}", type=etype,
        occurred_at=T0 + timedelta(days=days), received_at=T0 + timedelta(days=days, minutes=1),
        mailpiece=Mailpiece(id=piece, kind="postcard", country=country, campaign_id=campaign),
        location=Location(zip=zip_code),
        recipient=Recipient(name=name, email=email or f"{piece}@example.com", country=country))


@dataclass
class Console:
    """A running receiver + worker + destination."""

    svc: Service
    crm: Crm
    worker: WorkerProcess
    redis: redis.Redis

    @property
    def url(self) -> str:
        return self.svc.url

    def api(self, method: str, path: str, token: str = READ_TOKEN, **kw: Any) -> httpx.Response:
        """A JSON API call with a bearer token."""
        return self.svc.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)

    def feed(self, *events: CanonicalEvent) -> None:
        """Put events on the ingest stream, as the receiver's ingest does."""
        for e in events:
            self.redis.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})

    def settled(self, timeout: float = 60.0) -> None:
        """Wait until the worker applied every fed event and no delivery is due or running."""
        def idle() -> bool:
            assert self.worker.alive, f"the worker exited: {self.worker.log()[-3000:]}"
            return (self.redis.xlen(keys.INGEST_STREAM) == 0 and self.redis.zcard(keys.DELIVERIES_DUE) == 0)

        assert wait_for(idle, timeout), f"worker did not settle: {self.worker.log()[-3000:]}"


@pytest.fixture
def console(redis_url: str, tmp_path: Path) -> Iterator[Console]:
    crm = Crm()
    crm.server.__enter__()
    data = console_config(redis_url, crm.server.url)
    svc = start_service(redis_url, config_data=data)
    worker = WorkerProcess(write_config(tmp_path / "config.toml", data), tmp_path / "worker.log").start()
    env = Console(svc, crm, worker, redis.Redis.from_url(redis_url))
    try:
        yield env
    finally:
        worker.terminate()
        svc.close()
        crm.server.__exit__(None, None, None)
        env.redis.close()


MakeConsole = Callable[..., Console]
__all__ = ["API_TOKEN", "OPERATE_TOKEN", "READ_TOKEN", "Console", "make_service", "piece_event"]
