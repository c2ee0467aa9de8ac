"""Shared fixtures for adapter tests: event factories, a loopback vendor server, an httpx client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from postrelay.adapters.base import DeliveryContext
from postrelay.core.events import CanonicalEvent, EventType, Mailpiece, Recipient
from tests.support.http_server import LocalHTTPServer, Reply
from tests.support.redis_server import free_port

OCCURRED_AT = datetime(2024, 5, 6, 14, 30, 15, tzinfo=UTC)


def build_event(
    type: str = "processed_for_delivery",
    *,
    email: str | None = "ada@example.com",
    stage: str | None = None,
    metadata: dict[str, Any] | None = None,
    source_event_id: str = "evt_1",
    piece_id: str = "ltr_123",
    **fields: Any,
) -> CanonicalEvent:
    """A Lob letter event for Ada; `stage` overrides the piece's furthest stage (as the worker sets it)."""
    event = CanonicalEvent.build(
        source="lob",
        source_event_id=source_event_id,
        type=type,
        occurred_at=OCCURRED_AT,
        mailpiece=Mailpiece(id=piece_id, kind="letter", campaign_id="spring-24", tracking_number="9400111"),
        recipient=Recipient(name="Ada Lovelace", email=email),
        metadata=metadata or {},
        **fields,
    )
    if stage is not None:
        event = event.model_copy(update={"stage": EventType(stage)})
    return event


@pytest.fixture
def make_event() -> Callable[..., CanonicalEvent]:
    """Factory for canonical events (see `build_event`)."""
    return build_event


@pytest.fixture
def ctx() -> DeliveryContext:
    """A fresh delivery context (empty memo)."""
    return DeliveryContext(destination="test")


@pytest.fixture(scope="session")
def _shared_server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as srv:
        yield srv


@pytest.fixture
def server(_shared_server: LocalHTTPServer) -> LocalHTTPServer:
    """The loopback vendor server, reset: tests set `server.handler` to play the vendor."""
    _shared_server.handler = lambda req: Reply()
    _shared_server.requests.clear()
    return _shared_server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """The shared client the worker would pass; its timeout is generous, so a loaded machine never trips it."""
    with httpx.Client(timeout=10.0) as c:
        yield c


@pytest.fixture
def short_client() -> Iterator[httpx.Client]:
    """A client that gives up after 0.2 s: for the tests of what a timeout does (their servers answer late)."""
    with httpx.Client(timeout=0.2) as c:
        yield c


@pytest.fixture
def closed_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"
