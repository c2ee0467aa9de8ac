"""Redis down: nothing is accepted (503 + Retry-After), health stays up, readiness goes down, and the
provider's retry of the same event after Redis is back is accepted exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from postrelay.core import keys
from tests.receiver.harness import PG_SECRETS, Service, assert_accepted, assert_error
from tests.support import payloads as P
from tests.support import signing
from tests.support.redis_server import RedisServer


@pytest.fixture
def outage(service: Service, redis_server: RedisServer) -> Iterator[RedisServer]:
    """Yields the session's Redis server for the test to stop; always restarted afterwards (it is shared)."""
    try:
        yield redis_server
    finally:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()


def send(service: Service, source: str) -> Any:
    """Post this test's one event for `source`, signed at the clock's current time (as a retry is)."""
    if source == "postgrid":
        return service.post_postgrid(P.postgrid_status_update("letter", "processed_for_delivery"), fmt="json")
    if source == "lob":
        body = P.lob_mailpiece("letter", tracking_events=[P.lob_tracking_event("Mailed", "2024-05-02T21:00:00.000Z")])
        return service.post_lob(P.lob_event("letter.mailed", body, event_id="evt_outage_1"))
    if source == "postalytics":
        return service.post_postalytics(P.postalytics_event(11))
    return service.post_generic(P.generic_event("mailed"), msg_id="msg_outage_1")


def assert_503(resp: Any) -> None:
    body = assert_error(resp, 503, "redis_unavailable")
    assert resp.headers["retry-after"] == "17"
    assert "retry" in body["detail"]


@pytest.mark.parametrize("source", ["postgrid", "lob", "postalytics", "generic"])
def test_redis_down_then_back_retry_is_accepted_once(service: Service, outage: RedisServer, source: str) -> None:
    assert service.http.get("/readyz").status_code == 200
    outage.stop()

    assert_503(send(service, source))
    assert_503(send(service, source))  # the provider retrying during the outage changes nothing
    ready = service.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["retry-after"] == "17"
    assert ready.json()["status"] == "unavailable"
    health = service.http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert_503(service.get_piece("lob", "ltr_any"))

    outage.start()
    service.clock.advance(3600)  # PostGrid's first retry comes an hour later
    assert service.http.get("/readyz").status_code == 200
    resp = send(service, source)
    assert_accepted(resp)
    entries = service.redis.xrange(keys.INGEST_STREAM)
    assert len(entries) == 1
    assert json.loads(entries[0][1][b"e"])["source"] == source
    service.clock.advance(7200)  # and a later retry of the same event is a duplicate
    assert_accepted(send(service, source), accepted=0, duplicates=1)
    assert service.stream_len() == 1


def test_same_signed_jwt_replayed_after_the_outage(service: Service, outage: RedisServer) -> None:
    """PostGrid may resend the very same bytes: a JWT signed before the outage is accepted an hour later."""
    event = P.postgrid_status_update("letter", "processed_for_delivery")
    body = signing.postgrid_jwt(event, PG_SECRETS[0], iat=service.clock())
    outage.stop()
    assert_503(service.post("/webhooks/postgrid", body))
    outage.start()
    service.clock.advance(3600)
    assert_accepted(service.post("/webhooks/postgrid", body))
    assert service.stream_len() == 1


def test_events_accepted_before_the_outage_survive_it(service: Service, outage: RedisServer) -> None:
    first = P.lob_event("letter.mailed", P.lob_mailpiece(), event_id="evt_before")
    second = P.lob_event("letter.in_transit", P.lob_mailpiece(), event_id="evt_during")
    assert_accepted(service.post_lob(first))
    outage.stop()
    assert_503(service.post_lob(second))
    outage.start()  # same data directory: the AOF brings back the stream and the dedupe markers
    assert_accepted(service.post_lob(first), accepted=0, duplicates=1)
    assert_accepted(service.post_lob(second))
    assert [e["source_event_id"] for e in service.queued()] == ["evt_before", "evt_during"]


def test_redis_killed_answers_503_fast(service: Service, outage: RedisServer) -> None:
    outage.stop(kill=True)
    resp = send(service, "lob")
    assert_503(resp)
    assert resp.elapsed.total_seconds() < 2
