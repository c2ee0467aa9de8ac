"""The receiver under test: the real app on a real uvicorn server (background thread, loopback port).

Reusable by other suites: import the fixtures (`make_service`, `service`) into a conftest next to
`tests/conftest.py`'s `redis_url`. A `Service` has `.url`, `.config`, `.redis` (sync client), `.clock`
(the injected, settable clock), an httpx client and helpers that sign and post each provider's webhooks.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from postrelay.core import keys
from postrelay.core.config import Config, parse_config
from postrelay.core.events import CanonicalEvent
from postrelay.core.timeline import TimelineWriter
from postrelay.receiver.app import create_app
from postrelay.receiver.server import uvicorn_options
from tests.support import signing
from tests.support.payloads import NOW_TS

PG_SECRETS = ["pg_secret_current_4f9a1c2e7b0d93a1c", "pg_secret_previous_8d3e6a0f5c1b27e4d"]
LOB_SECRETS = ["lob_secret_current_1b2c3d4e5f", "lob_secret_previous_6a7b8c9d0e"]
GENERIC_SECRETS = [signing.make_whsec(b"generic-current"), signing.make_whsec(b"generic-previous")]
PA_TOKEN = "pa_tok_current_7Hq2LmX9vR4sT1wZ"
PA_TOKEN_OLD = "pa_tok_previous_K3nB8cD5fG6hJ0pQ"
API_TOKEN = "read-api-token-0123456789abcdef"


class Clock:
    """The receiver's injected clock: epoch seconds, settable and advanceable (no sleeping in tests)."""

    def __init__(self, now: float = NOW_TS) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (negative: backward)."""
        self.now += seconds


def base_config(redis_url: str) -> dict[str, Any]:
    """Every source configured with two secrets/tokens (rotation), short Redis timeouts, a read-API token."""
    return {
        "server": {"redis_url": redis_url, "api_token": API_TOKEN, "redis_timeout": 1.0, "retry_after": 17},
        "sources": {
            "postgrid": {"secrets": list(PG_SECRETS)},
            "lob": {"secrets": list(LOB_SECRETS)},
            "postalytics": {"token": PA_TOKEN, "tokens": [PA_TOKEN_OLD]},
            "generic": {"secrets": list(GENERIC_SECRETS)},
        },
    }


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base`; a None value removes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class _PromptServer(uvicorn.Server):
    """uvicorn.Server that notices `should_exit` within milliseconds and shuts down without fixed sleeps.

    uvicorn polls `should_exit` every 100 ms and sleeps another 100 ms before closing connections: ~0.2 s per
    test for the ~150 tests that start a receiver. The shutdown keeps uvicorn's order (stop accepting, ask
    connections to close, wait for them and the background tasks, lifespan shutdown), polling every 2 ms.
    """

    async def main_loop(self) -> None:
        ticks = 0
        while not await self.on_tick(0 if ticks % 200 == 0 else 1):  # on_tick's housekeeping: once per second
            ticks += 1
            await asyncio.sleep(0.005)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        deadline = time.monotonic() + 5
        while (self.server_state.connections or self.server_state.tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


class UvicornThread:
    """uvicorn.Server running the app in a daemon thread on an already bound loopback socket."""

    def __init__(self, app: Any, options: dict[str, Any] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        # `options`: what `postrelay serve` passes (receiver.server.uvicorn_options), unless a test says otherwise
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                **(options if options is not None else {}))
        self.server = _PromptServer(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> UvicornThread:
        """Start and wait until uvicorn reports it is serving."""
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (lifespan shutdown closes the app's Redis client)."""
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@dataclass
class Service:
    """A running receiver and what tests need to drive and inspect it."""

    url: str
    config: Config
    redis: redis.Redis
    clock: Clock
    http: httpx.Client
    _server: UvicornThread = field(repr=False)

    # --- posting ---------------------------------------------------------------------------------------

    def post(self, path: str, content: bytes | Any = b"", headers: dict[str, str] | None = None) -> httpx.Response:
        """POST raw bytes (or anything httpx accepts as `content`, e.g. a generator for chunked bodies)."""
        return self.http.post(path, content=content, headers=headers or {})

    def post_postgrid(self, event: Any, *, fmt: str = "jwt", secret: str = PG_SECRETS[0],
                      timestamp: float | None = None, millis: bool = False, exp: float | None = None) -> httpx.Response:
        """Sign `event` as PostGrid does (`jwt`: HS256 body with `iat`; `json`: PostGrid-Signature) and post it."""
        ts = self.clock() if timestamp is None else timestamp
        if fmt == "jwt":
            body = signing.postgrid_jwt(event, secret, iat=ts, exp=exp)
            return self.post("/webhooks/postgrid", body, {"Content-Type": "application/jwt"})
        body, headers = signing.postgrid_json(event, secret, ts, millis=millis)
        return self.post("/webhooks/postgrid", body, headers)

    def post_lob(self, event: Any, *, secret: str = LOB_SECRETS[0], timestamp: float | None = None,
                 millis: bool = False) -> httpx.Response:
        """Sign `event` with Lob-Signature and post it."""
        ts = self.clock() if timestamp is None else timestamp
        body, headers = signing.lob_signed(event, secret, ts, millis=millis)
        return self.post("/webhooks/lob", body, headers)

    def post_postalytics(self, body: Any, *, token: str = PA_TOKEN) -> httpx.Response:
        """Post a Postalytics body to its token URL."""
        return self.post(f"/webhooks/postalytics/{token}", signing.to_bytes(body), {"Content-Type": "application/json"})

    def post_generic(self, event: Any, *, msg_id: str = "msg_2fWcLgQ1fJbJ4kOq", secret: str = GENERIC_SECRETS[0],
                     timestamp: float | None = None) -> httpx.Response:
        """Sign `event` with Standard Webhooks headers and post it."""
        ts = self.clock() if timestamp is None else timestamp
        body, headers = signing.generic_signed(event, secret, msg_id, ts)
        return self.post("/webhooks/generic", body, headers)

    # --- reading ---------------------------------------------------------------------------------------

    def get_piece(self, source: str, piece_id: str, token: str | None = API_TOKEN) -> httpx.Response:
        """GET /v1/mailpieces/{source}/{id} with the bearer token."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.get(f"/v1/mailpieces/{source}/{piece_id}", headers=headers)

    def stream_len(self) -> int:
        """Entries in the ingest stream."""
        return int(self.redis.xlen(keys.INGEST_STREAM))

    def queued(self) -> list[dict[str, Any]]:
        """The canonical events in the ingest stream (raw JSON dicts), oldest first."""
        import json

        return [json.loads(fields[b"e"]) for _, fields in self.redis.xrange(keys.INGEST_STREAM)]

    def queued_events(self) -> list[CanonicalEvent]:
        """The queued events as models."""
        return [CanonicalEvent.model_validate_json(fields[b"e"])
                for _, fields in self.redis.xrange(keys.INGEST_STREAM)]

    def apply_queued(self) -> list[CanonicalEvent]:
        """What the worker does: apply every queued event to the mailpiece timelines, in stream order."""
        writer = TimelineWriter(self.redis, self.config.server.timeline_retention)
        return writer.apply_many(self.queued_events())

    def close(self) -> None:
        """Stop the server and close clients."""
        self.http.close()
        self._server.stop()
        self.redis.close()


def start_service(redis_url: str, override: dict[str, Any] | None = None, *, clock: Clock | None = None,
                  config_data: dict[str, Any] | None = None, h11: bool = False) -> Service:
    """Build the config (base + override, or exactly `config_data`), start the app under uvicorn as
    `postrelay serve` runs it (`h11`: with the h11 parser instead of httptools), return a Service."""
    data = config_data if config_data is not None else merge(base_config(redis_url), override or {})
    config = parse_config(data)
    clock = clock or Clock()
    app = create_app(config, clock=clock)
    server = UvicornThread(app, uvicorn_options(config, h11=h11)).start()
    url = f"http://127.0.0.1:{server.port}"
    return Service(url=url, config=config, redis=redis.Redis.from_url(redis_url), clock=clock,
                   http=httpx.Client(base_url=url, timeout=10), _server=server)


@pytest.fixture
def make_service(redis_url: str) -> Iterator[Callable[..., Service]]:
    """Factory: `make_service({"server": {"max_body_bytes": 2048}})` starts another receiver (stopped at teardown)."""
    started: list[Service] = []

    def make(override: dict[str, Any] | None = None, **kw: Any) -> Service:
        svc = start_service(redis_url, override, **kw)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.close()


@pytest.fixture(scope="session")
def shared_service(redis_server: Any) -> Iterator[Service]:
    """One receiver with the base config for the whole session (uvicorn takes ~0.2 s to stop)."""
    svc = start_service(redis_server.url)
    yield svc
    svc.close()


@pytest.fixture
def service(shared_service: Service, redis_url: str) -> Service:
    """The receiver with every source configured, Redis flushed, and the clock reset to `payloads.NOW`."""
    shared_service.clock.now = NOW_TS
    return shared_service


# --- assertions shared by the receiver tests ---------------------------------------------------------------

CANONICAL_KEYS = {"id", "type", "occurred_at", "received_at", "source", "source_event_id", "mailpiece", "stage",
                  "location", "recipient", "metadata", "estimated"}
MAILPIECE_KEYS = {"id", "kind", "country", "campaign_id", "mailing_class", "tracking_number"}
LOCATION_KEYS = {"zip"}
RECIPIENT_KEYS = {"name", "email", "phone", "address_line1", "address_line2", "city", "region", "postal_code", "country"}


def assert_canonical_shape(event: dict[str, Any]) -> None:
    """Exactly the public JSON contract's keys, at every level, with the right scalar types."""
    assert set(event) == CANONICAL_KEYS
    assert set(event["mailpiece"]) == MAILPIECE_KEYS
    assert set(event["location"]) == LOCATION_KEYS
    assert set(event["recipient"]) == RECIPIENT_KEYS
    assert event["id"].startswith("mev_") and len(event["id"]) == 36
    assert isinstance(event["metadata"], dict)
    assert isinstance(event["estimated"], bool)
    for stamp in ("occurred_at", "received_at"):
        assert event[stamp].endswith("Z"), event[stamp]


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """An error answer: the status, a JSON body of exactly {"error", "detail"}, nothing internal leaked."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    for leak in ("Traceback", 'File "', "Exception", "site-packages"):
        assert leak not in resp.text
    return body


def assert_accepted(resp: httpx.Response, accepted: int = 1, duplicates: int = 0, ignored: int = 0) -> None:
    """200 with the ingest counts."""
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": accepted, "duplicates": duplicates, "ignored": ignored}
