"""`postrelay status`: the one-screen summary, run in-process through `postrelay.cli.main`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from postrelay import cli
from postrelay.core import keys
from postrelay.core.config import parse_config
from postrelay.workers import worker
from postrelay.workers.followups import FollowupHandler
from postrelay.workers.runtime import Runtime
from tests.support.http_server import LocalHTTPServer, Reply
from tests.workers.conftest import dispatch, drain, event, push, relay_handler


def write_config(tmp_path: Path, redis_url: str, ok_url: str, gone_url: str) -> Path:
    path = tmp_path / "postrelay.toml"
    path.write_text(f"""
[server]
redis_url = "{redis_url}"
worker_stale_after = "60s"

[destinations.crm]
type = "webhook"
url = "{ok_url}"

[destinations.archive]
type = "webhook"
url = "{gone_url}"

[[routes]]
events = ["*"]
to = ["crm"]

[[routes]]
events = ["delivered"]
to = ["archive"]

[[followups]]
name = "thank_you"
after = "delivered"
delay = "3 days"
do = "crm"
""", encoding="utf-8")
    return path


def test_status_shows_queues_workers_destinations_dlq_followups_and_recent_events(redis_url, tmp_path, capsys):
    with LocalHTTPServer() as ok, LocalHTTPServer(lambda r: Reply(410, {"error": "gone"})) as gone:
        cfg = write_config(tmp_path, redis_url, ok.url, gone.url)
        from postrelay.core.config import load_config

        rt = Runtime(config=load_config(cfg), redis=redis.Redis.from_url(redis_url))  # real clock
        try:
            now = datetime.now(UTC)
            recent = (now - timedelta(minutes=5)).isoformat()
            push(rt, event("mailed", piece="ltr_1", occurred=recent), event("mailed", piece="ltr_2", occurred=recent),
                 event("in_transit", piece="ltr_1", occurred=recent), event("delivered", piece="ltr_1", occurred=recent))
            dispatch(rt, handlers=[relay_handler(rt), FollowupHandler(rt)])
            drain(rt)  # crm: 4 ok; archive: 410 -> dead letter
            push(rt, event("mailed", piece="ltr_3", occurred=recent), event("mailed", piece="ltr_4", occurred=recent))
            worker.heartbeat(rt, "host-a:101")
            rt.redis.hset(keys.WORKER_HEARTBEATS, "host-b:202", time.time() - 3600)
        finally:
            rt.close()

        assert cli.main(["status", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "ingest stream      2 entries (0 read, not yet acknowledged)" in out
        assert "delivery queue     0 ready, 0 scheduled" in out
        assert "queue depth        2" in out
        assert "workers            1 alive, 1 stale (newest heartbeat" in out
        assert "dead letters       1  (postrelay dlq list)" in out
        assert "follow-ups         1 pending, next due " in out
        assert "(in 2.9 d" in out or "(in 3.0 d" in out
        assert "events, last hour  4: mailed 2, in_transit 1, delivered 1" in out
        crm = next(line for line in out.splitlines() if line.strip().startswith("crm "))
        archive = next(line for line in out.splitlines() if line.strip().startswith("archive "))
        assert crm.split()[:6] == ["crm", "webhook", "closed", "no", "0", "0"]
        assert archive.split()[:6] == ["archive", "webhook", "closed", "no", "0", "1"]
        assert len(out.splitlines()) <= 24  # one screen

        assert cli.main(["status", "--config", str(cfg), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
    assert data["ingest"] == {"stream": 2, "pending": 0}
    assert data["deliveries"] == {"queued": 0, "scheduled": 0, "overdue": 0, "oldest_overdue_s": 0.0}
    assert data["queue_depth"] == 2 and data["dlq"] == 1
    assert data["workers"]["alive"] == 1 and data["workers"]["registered"] == 2
    assert data["workers"]["alive_names"] == ["host-a:101"]
    assert data["followups"]["pending"] == 1 and data["followups"]["overdue"] == 0
    assert data["followups"]["next"]["id"] == "thank_you|lob|ltr_1"
    assert data["events_last_hour"] == {"total": 4, "by_type": {"mailed": 2, "in_transit": 1, "delivered": 1}}
    assert {d["name"]: d["dead"] for d in data["destinations"]} == {"crm": 0, "archive": 1}


def test_status_on_an_empty_system(redis_url, tmp_path, capsys):
    cfg = tmp_path / "empty.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n', encoding="utf-8")
    assert cli.main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "ingest stream      0 entries" in out
    assert "workers            0 alive (no worker ever registered a heartbeat)" in out
    assert "follow-ups         0 pending, 0 overdue" in out
    assert "events, last hour  0: none" in out
    assert "no destinations configured" in out


def test_status_hides_the_redis_password():
    from postrelay.core.redaction import mask_url

    assert mask_url("redis://:hunter2-secret@db:6379/0") == "redis://:***@db:6379/0"
    assert parse_config({}).server.worker_stale_after == 60
