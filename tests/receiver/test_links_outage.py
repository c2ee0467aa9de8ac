"""Redis down during visits: the visitor is redirected all the same, the miss is counted, and after recovery
every visit is recorded exactly once (nothing buffered is replayed twice)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.receiver.harness import Service
from tests.receiver.links_support import LINKS, apply_visits, metric, mint, visit, visits_in_stream
from tests.support.redis_server import RedisServer


@pytest.fixture
def outage(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, for the test to stop; always running again afterwards (it is shared)."""
    try:
        yield redis_server
    finally:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()


def test_visits_while_redis_is_down_redirect_and_count_the_miss(make_service, outage: RedisServer) -> None:
    svc: Service = make_service({"links": {**LINKS, "cache_ttl": "1h"}})
    known = mint(svc)["token"]
    never_read = mint(svc, target_url="https://shop.example.com/other")["token"]
    assert visit(svc, known).status_code == 302  # read once: this process has the record
    outage.stop()

    for agent_suffix in ("", " b", " c"):
        resp = visit(svc, known, agent=f"Mozilla/5.0 Safari{agent_suffix}")
        assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example.com/offer"
    unknown_here = visit(svc, never_read)  # no record to redirect with: a page, never a traceback
    assert unknown_here.status_code == 503 and "try again" in unknown_here.text
    assert metric(svc, "postrelay_link_visits_total", kind="open", outcome="missed") == 4

    outage.start()
    svc.clock.advance(7200)  # past the cache: records are read again
    assert visit(svc, known, agent="Mozilla/5.0 Safari after").status_code == 302
    assert visit(svc, never_read).status_code == 302
    events = visits_in_stream(svc)
    assert len(events) == 3  # the one before, two after; the misses are not replayed
    assert len({e["id"] for e in events}) == 3


def test_fallback_url_is_used_for_unknown_links_while_redis_is_down(make_service, outage: RedisServer) -> None:
    svc: Service = make_service({"links": {**LINKS, "fallback_url": "https://shop.example.com/"}})
    token = mint(svc)["token"]
    outage.stop()
    resp = visit(svc, token)
    assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example.com/"
    assert metric(svc, "postrelay_link_visits_total", kind="open", outcome="missed") == 1


def test_nothing_is_applied_twice_after_recovery(make_service, outage: RedisServer) -> None:
    svc: Service = make_service({"links": {**LINKS, "cache_ttl": "1h"}})
    token = mint(svc)["token"]
    assert visit(svc, token).status_code == 302
    outage.stop()
    assert visit(svc, token, agent="Mozilla/5.0 other").status_code == 302
    outage.start()
    assert visit(svc, token, agent="Mozilla/5.0 third").status_code == 302
    apply_visits(svc)
    piece = svc.get_piece("links", token).json()
    assert [e["type"] for e in piece["events"]] == ["purl_opened", "purl_opened"]


def test_the_record_cache_keeps_the_newest_reads(make_service, outage: RedisServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A full cache drops the record read longest ago (the others still redirect while Redis is down)."""
    monkeypatch.setattr("postrelay.receiver.links.MAX_CACHE", 2)
    svc: Service = make_service({"links": {**LINKS, "cache_ttl": "1h"}})
    tokens = [mint(svc, target_url=f"https://shop.example.com/{name}")["token"] for name in ("a", "b", "c")]
    for token in tokens:
        assert visit(svc, token).status_code == 302
    outage.stop()
    assert visit(svc, tokens[0]).status_code == 503  # dropped when the third was read
    for token, name in zip(tokens[1:], ("b", "c"), strict=True):
        resp = visit(svc, token, agent="Mozilla/5.0 Safari later")
        assert resp.status_code == 302 and resp.headers["location"] == f"https://shop.example.com/{name}"
