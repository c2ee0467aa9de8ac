"""/metrics after real webhooks and real worker deliveries: every contract series with the right value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from postrelay.core import keys
from postrelay.workers.followups import FollowupHandler, Scheduler
from tests.ops.conftest import Scrape
from tests.receiver.harness import LOB_SECRETS
from tests.support import payloads, signing
from tests.support.http_server import LocalHTTPServer, Reply
from tests.support.redis_server import free_port
from tests.support.signing import lob_headers
from tests.workers.conftest import dispatch, drain, relay_handler

NOW_TS = payloads.NOW_TS
# The metrics contract (docs/operations.md, deploy/prometheus/alerts.yml, tests/test_deploy.py): name -> type.
CONTRACT = {
    "postrelay_events_received": "counter",
    "postrelay_events_rejected": "counter",
    "postrelay_signature_failures": "counter",
    "postrelay_ingest_seconds": "histogram",
    "postrelay_http_requests": "counter",
    "postrelay_queue_depth": "gauge",
    "postrelay_deliveries": "counter",
    "postrelay_dlq_size": "gauge",
    "postrelay_circuit_state": "gauge",
    "postrelay_followups_pending": "gauge",
    "postrelay_followup_lag_seconds": "histogram",
    "postrelay_worker_heartbeat_age_seconds": "gauge",
    "postrelay_end_to_end_seconds": "histogram",
}


def mailed(piece: str, event_id: str) -> dict:
    body = payloads.lob_mailpiece("letter", piece, tracking_events=[
        payloads.lob_tracking_event("Mailed", "2024-05-06T13:00:00.000Z")])
    return payloads.lob_event("letter.mailed", body, event_id=event_id)


def test_metrics_after_webhooks_and_deliveries(make_service, make_runtime, clock):
    with LocalHTTPServer() as crm, \
            LocalHTTPServer(lambda r: Reply(503, {"error": "down"})) as flaky, \
            LocalHTTPServer(lambda r: Reply(410, {"error": "gone"})) as strict:
        override = {
            "destinations": {"crm": {"type": "webhook", "url": crm.url},
                             "flaky": {"type": "webhook", "url": flaky.url},
                             "strict": {"type": "webhook", "url": strict.url}},
            "routes": [{"events": ["*"], "to": ["crm"]}, {"events": ["mailed"], "to": ["flaky", "strict"]}],
            "delivery": {"circuit_threshold": 1, "base_delay": 1, "max_delay": 60},
            "followups": [{"name": "thanks", "after": "mailed", "delay": "1h", "do": "crm"},
                          {"name": "later", "after": "mailed", "delay": "30 days", "do": "crm"}],
        }
        svc = make_service(override)
        clock.now = NOW_TS + 3  # the worker's clock: deliveries happen 3 s after the receiver got the event
        rt = make_runtime(override)

        ok = svc.post_lob(mailed("ltr_a", "evt_a_mailed"))
        assert ok.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
        assert svc.post_lob(mailed("ltr_a", "evt_a_mailed")).json()["duplicates"] == 1
        billed = payloads.lob_event("letter.billed", payloads.lob_mailpiece("letter", "ltr_a"), event_id="evt_bill")
        assert svc.post_lob(billed).json()["ignored"] == 1
        assert svc.post_lob(mailed("ltr_x", "evt_x"), secret="not-the-secret-at-all").status_code == 401
        bad = b"{not json"
        assert svc.post("/webhooks/lob", bad, lob_headers(bad, LOB_SECRETS[0], svc.clock())).status_code == 400
        assert svc.http.get("/webhooks/lob").status_code == 405

        dispatch(rt, handlers=[relay_handler(rt), FollowupHandler(rt)])
        drain(rt)  # crm ok, flaky 503 -> retry (and its circuit opens), strict 410 -> dead letter
        assert Scheduler(rt).run_once() == 1  # "thanks" was due at 14:00, fires at 15:00:03
        drain(rt)  # its delivery to crm
        rt.redis.hset(keys.WORKER_HEARTBEATS, mapping={"host-a:1": NOW_TS - 7, "host-b:2": NOW_TS - 3600})
        assert svc.post_lob(mailed("ltr_b", "evt_b_mailed")).status_code == 200  # waits in the stream

        resp = svc.http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    m = Scrape(resp.text)
    for name, kind in CONTRACT.items():
        assert m.types.get(name) == kind, f"{name}: {m.types.get(name)}"

    lob = {"source": "lob"}
    assert m.value("postrelay_events_received_total", **lob, outcome="accepted") == 2
    assert m.value("postrelay_events_received_total", **lob, outcome="duplicate") == 1
    assert m.value("postrelay_events_received_total", **lob, outcome="ignored") == 1
    assert m.value("postrelay_events_received_total", **lob, outcome="rejected") == 2
    assert m.value("postrelay_events_received_total", source="postgrid", outcome="accepted") == 0  # pre-created
    assert m.value("postrelay_events_rejected_total", **lob, reason="invalid_signature") == 1
    assert m.value("postrelay_events_rejected_total", **lob, reason="invalid_json") == 1
    assert m.value("postrelay_signature_failures_total", **lob) == 1
    assert m.value("postrelay_signature_failures_total", source="postgrid") == 0
    assert m.value("postrelay_ingest_seconds_count") == 6
    assert 0 < m.value("postrelay_ingest_seconds_sum") < 6
    assert m.value("postrelay_http_requests_total", path="/webhooks/lob", status="200") == 4
    assert m.value("postrelay_http_requests_total", path="/webhooks/lob", status="401") == 1
    assert m.value("postrelay_http_requests_total", path="/webhooks/lob", status="400") == 1
    assert m.value("postrelay_http_requests_total", path="/webhooks/lob", status="405") == 1

    assert m.value("postrelay_redis_up") == 1
    assert m.value("postrelay_ingest_backlog") == 1
    assert m.value("postrelay_deliveries_queued") == 0
    assert m.value("postrelay_queue_depth") == 1
    assert m.value("postrelay_deliveries_scheduled") == 1  # flaky's retry
    assert m.value("postrelay_deliveries_total", destination="crm", outcome="ok") == 2
    assert m.value("postrelay_deliveries_total", destination="flaky", outcome="retry") == 1
    assert m.value("postrelay_deliveries_total", destination="strict", outcome="permanent") == 1
    assert m.value("postrelay_deliveries_total", destination="crm", outcome="dead") == 0
    assert m.value("postrelay_dlq_size") == 1
    assert m.value("postrelay_circuit_state", destination="flaky") == 2
    assert m.value("postrelay_circuit_state", destination="crm") == 0
    assert m.value("postrelay_circuit_state", destination="strict") == 0
    assert m.value("postrelay_followups_pending") == 1  # "later"
    assert m.value("postrelay_followups_overdue") == 0
    assert m.value("postrelay_followup_lag_seconds_count") == 1
    assert m.value("postrelay_followup_lag_seconds_sum") == pytest.approx(3603)
    assert m.value("postrelay_followup_lag_seconds_bucket", le="3600.0") == 0
    assert m.value("postrelay_followup_lag_seconds_bucket", le="7200.0") == 1
    assert m.value("postrelay_end_to_end_seconds_count") == 1  # the relay delivery, not the follow-up
    assert m.value("postrelay_end_to_end_seconds_sum") == pytest.approx(3)
    assert m.value("postrelay_end_to_end_seconds_bucket", le="2.5") == 0
    assert m.value("postrelay_end_to_end_seconds_bucket", le="5.0") == 1
    assert m.value("postrelay_end_to_end_seconds_bucket", le="+Inf") == 1
    assert m.value("postrelay_events_processed_total", type="mailed") == 1
    assert m.value("postrelay_worker_heartbeat_age_seconds") == pytest.approx(7)
    assert m.value("postrelay_workers_alive") == 1
    assert not m.has("postrelay_http_requests_total", path="/metrics", status="200")  # counted once answered


def test_metrics_without_workers_or_redis(make_service, redis_server):
    svc = make_service()
    m = Scrape(svc.http.get("/metrics").text)
    assert m.value("postrelay_redis_up") == 1
    assert not m.has("postrelay_worker_heartbeat_age_seconds")  # absent until a worker ever registered
    assert m.value("postrelay_workers_alive") == 0
    assert m.value("postrelay_queue_depth") == 0
    redis_server.stop()
    try:
        resp = svc.http.get("/metrics")
        assert resp.status_code == 200
        m = Scrape(resp.text)
        assert m.value("postrelay_redis_up") == 0
        assert not m.has("postrelay_queue_depth")
        assert m.value("postrelay_http_requests_total", path="/metrics", status="200") == 1
    finally:
        redis_server.start()


def test_http_path_label_never_carries_the_postalytics_token_or_unknown_paths(make_service):
    svc = make_service()
    token = "pa_tok_current_7Hq2LmX9vR4sT1wZ"
    svc.post_postalytics(payloads.postalytics_event(11), token=token)
    svc.post_postalytics(payloads.postalytics_event(11), token="wrong-token-0123456789")
    svc.http.get("/no/such/page")
    svc.http.post("/webhooks/somethingelse", content=b"{}")
    text = svc.http.get("/metrics").text
    assert token not in text and "wrong-token" not in text and "somethingelse" not in text
    m = Scrape(text)
    assert m.value("postrelay_http_requests_total", path="/webhooks/postalytics/{token}", status="200") == 1
    assert m.value("postrelay_http_requests_total", path="/webhooks/postalytics/{token}", status="401") == 1
    assert m.value("postrelay_http_requests_total", path="/webhooks/{source}", status="404") == 1
    assert m.value("postrelay_http_requests_total", path="<unmatched>", status="404") == 1
    assert m.value("postrelay_events_rejected_total", source="unknown", reason="unknown_source") == 1
    assert m.value("postrelay_signature_failures_total", source="postalytics") == 1


# --- several uvicorn processes: prometheus-client multiprocess mode -------------------------------------------

def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"postrelay serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("postrelay serve did not come up")


def test_serve_with_several_processes_sums_their_counters(redis_url: str, tmp_path: Path):
    port = free_port()
    secret = "lob_multiproc_secret_5f0c2a9e"
    cfg = tmp_path / "postrelay.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n\n[sources.lob]\nsecrets = ["{secret}"]\n', encoding="utf-8")
    prom_dir = tmp_path / "prom"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir), "POSTRELAY_LOG_LEVEL": "INFO"}
    env.pop("POSTRELAY_LOG_FORMAT", None)
    proc = subprocess.Popen([sys.executable, "-m", "postrelay.cli", "serve", "--config", str(cfg), "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)  # the first process answers; the second may still be starting on a loaded machine
        sent = 0
        deadline = time.monotonic() + 30
        # a new connection per request, so both processes take some: send until both have counted one (a
        # counter file per uvicorn worker process), at least 8
        while sent < 8 or len(list(prom_dir.glob("counter_*.db"))) < 2:
            assert time.monotonic() < deadline, f"one process took all {sent} requests"
            body, headers = signing.lob_signed(mailed(f"ltr_mp_{sent}", f"evt_mp_{sent}"), secret, time.time())
            resp = httpx.post(url + "/webhooks/lob", content=body, headers={**headers, "Connection": "close"})
            assert resp.status_code == 200, resp.text
            sent += 1
        m = Scrape(httpx.get(url + "/metrics").text)
        assert m.value("postrelay_events_received_total", source="lob", outcome="accepted") == sent
        assert m.value("postrelay_http_requests_total", path="/webhooks/lob", status="200") == sent
        assert m.value("postrelay_ingest_seconds_count") == sent
        assert m.value("postrelay_ingest_backlog") == sent
        assert len(list(prom_dir.glob("counter_*.db"))) == 2  # one file per uvicorn worker process
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
    lines = [line for line in err.decode().splitlines() if line.startswith("{")]
    import json

    requests = [json.loads(line) for line in lines if '"msg": "request"' in line]
    assert len([r for r in requests if r["path"] == "/webhooks/lob"]) == sent
    assert all(r["status"] == 200 and r["event_ids"] for r in requests if r["path"] == "/webhooks/lob")
    assert secret not in err.decode()


def test_redis_key_names_read_by_metrics_match_the_workers(redis_client):
    """/metrics reads RQ's key names without importing RQ, and the stores through the core (no worker module)."""
    from rq import Queue

    queue = Queue(keys.RQ_QUEUE_NAME, connection=redis_client)
    assert queue.key == keys.RQ_QUEUE
    assert queue.scheduled_job_registry.key == keys.RQ_SCHEDULED
    code = ("import sys, postrelay.receiver.app, postrelay.receiver.asgi; "
            "print(any(m.startswith(('postrelay.workers', 'workers')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
