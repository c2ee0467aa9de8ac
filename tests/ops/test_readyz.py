"""/readyz: 503 when Redis is unreachable or the newest worker heartbeat is stale; the body names the check."""

from __future__ import annotations

from postrelay.core import keys


def test_ready_without_any_worker_by_default(make_service):
    svc = make_service({"server": {"worker_stale_after": "60s"}})
    resp = svc.http.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "redis": "ok"}  # no worker ever registered: the check is skipped


def test_require_worker_makes_no_heartbeat_unready(make_service):
    svc = make_service({"server": {"require_worker": True}})
    resp = svc.http.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "redis": "ok", "worker": "none registered", "failed": ["worker"]}
    assert resp.headers["retry-after"] == "17"


def test_fresh_heartbeat_is_ready_and_stale_one_is_not(make_service):
    svc = make_service({"server": {"worker_stale_after": "60s"}})
    now = svc.clock()
    svc.redis.hset(keys.WORKER_HEARTBEATS, mapping={"old-host:1": now - 7200, "host:2": now - 4})
    resp = svc.http.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "redis": "ok", "worker": "ok: 1 alive, newest heartbeat 4 s ago",
                           "deliveries": "ok: none overdue"}

    svc.clock.advance(60)  # newest is now 64 s old
    resp = svc.http.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable" and body["redis"] == "ok" and body["failed"] == ["worker"]
    assert body["worker"] == "stale: newest heartbeat 64 s ago (limit 60 s)"

    # the load balancer's check looks at ingest only: events are still accepted and queued
    resp = svc.http.get("/readyz", params={"check": "redis"})
    assert resp.status_code == 200 and resp.json() == {"status": "ready", "redis": "ok"}
    assert svc.http.get("/readyz", params={"check": "bogus"}).status_code == 400

    svc.redis.hset(keys.WORKER_HEARTBEATS, "host:3", svc.clock())  # a worker comes back
    assert svc.http.get("/readyz").status_code == 200


def test_redis_down_is_unready_and_recovers(make_service, redis_server):
    svc = make_service()
    assert svc.http.get("/readyz").status_code == 200
    redis_server.stop()
    try:
        resp = svc.http.get("/readyz")
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "unavailable" and body["failed"] == ["redis"]
        assert body["redis"].startswith("unreachable (")
        assert resp.headers["retry-after"] == "17"
        assert svc.http.get("/healthz").status_code == 200  # liveness is not readiness
    finally:
        redis_server.start()
    assert svc.http.get("/readyz").status_code == 200


def test_overdue_delayed_deliveries_make_it_unready(make_service):
    """Delayed work (a retry, a circuit wait) due 31 s ago that no worker claimed: the workers are not keeping up."""
    svc = make_service({"server": {"worker_stale_after": "60s"}})
    now = svc.clock()
    svc.redis.hset(keys.WORKER_HEARTBEATS, "host:2", now - 1)
    svc.redis.zadd(keys.DELIVERIES_DUE, {"crm|mev_late": now - 29, "crm|mev_later": now + 600})
    assert svc.http.get("/readyz").status_code == 200  # due, not yet overdue
    svc.redis.zadd(keys.DELIVERIES_DUE, {"crm|mev_late": now - 31})
    resp = svc.http.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["failed"] == ["deliveries"] and body["worker"].startswith("ok: 1 alive")
    assert body["deliveries"] == "1 overdue: due more than 30 s ago, not claimed by a worker"
    assert svc.http.get("/readyz", params={"check": "redis"}).status_code == 200  # ingest is unaffected
