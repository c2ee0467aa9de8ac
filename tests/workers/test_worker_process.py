"""Real `postrelay worker` processes: a SIGKILLed worker's delivery completes once, quickly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from postrelay.core import keys
from postrelay.core.stores import deliveries
from postrelay.core.timeline import load_piece
from tests.support.http_server import LocalHTTPServer, Reply
from tests.workers.conftest import event


def _start_worker(config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, POSTRELAY_CLAIM_IDLE="2")
    return subprocess.Popen([sys.executable, "-m", "postrelay.cli", "worker", "--config", str(config)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sigkilled_worker_delivery_completes_once(redis_url: str, tmp_path: Path) -> None:
    first_arrived = threading.Event()

    def handler(req):
        if not first_arrived.is_set():
            first_arrived.set()
            return Reply(200, delay=4.0)  # the worker is killed while waiting for this answer
        return Reply(200)

    with LocalHTTPServer(handler) as hook:
        config = tmp_path / "postrelay.toml"
        config.write_text(f"""
[server]
redis_url = "{redis_url}"
[delivery]
lease = "2s"
[destinations.hook]
type = "webhook"
url = "{hook.url}/catch"
[[routes]]
events = ["*"]
to = ["hook"]
""")
        r = redis.Redis.from_url(redis_url)
        e = event("processed_for_delivery")
        worker = _start_worker(config)
        try:
            r.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})
            assert first_arrived.wait(20), "the first worker never called the destination"
            _kill(worker)
            started = time.monotonic()
            worker = _start_worker(config)
            done = keys.delivery_done(deliveries.delivery_key("hook", e.id))
            assert _wait(lambda: r.exists(done), 30), "the delivery was not completed after the crash"
            recovery = time.monotonic() - started
            time.sleep(1.0)
        finally:
            _kill(worker)
        ids = {req.headers["webhook-id"] for req in hook.requests}
        assert ids == {e.id}
        assert len(hook.requests) == 2  # the interrupted attempt and the one that completed; no more
        assert recovery < 20  # lease 2 s + housekeeping every 2 s, not RQ's 10-minute maintenance
        assert len(load_piece(r, "lob", "ltr_1")["events"]) == 1


def test_pending_followup_survives_restart_of_every_process(redis_server, redis_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime


    with LocalHTTPServer() as hook:
        config = tmp_path / "postrelay.toml"
        config.write_text(f"""
[server]
redis_url = "{redis_url}"
[destinations.hook]
type = "webhook"
url = "{hook.url}/followup"
[[followups]]
name = "soon"
after = "processed_for_delivery"
delay = "5s"
do = "hook"
""")
        r = redis.Redis.from_url(redis_url)
        now = datetime.now(UTC).isoformat()
        e = event("processed_for_delivery", occurred=now)
        worker = _start_worker(config)
        try:
            r.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})
            assert _wait(lambda: r.zcard(keys.FOLLOWUPS_DUE) == 1, 20), "the follow-up was not scheduled"
            _kill(worker)
            redis_server.restart()  # Redis too: the pending follow-up comes back from the AOF
            r = redis.Redis.from_url(redis_url)
            assert r.zcard(keys.FOLLOWUPS_DUE) == 1
            time.sleep(5.5)  # due while nothing runs
            worker = _start_worker(config)
            assert _wait(lambda: len(hook.requests) == 1, 20), "the overdue follow-up did not fire on start-up"
            time.sleep(2.0)
        finally:
            _kill(worker)
        assert len(hook.requests) == 1
        assert hook.requests[0].headers["webhook-id"].startswith("fup_")  # a follow-up is its own message
        assert hook.requests[0].json()["id"] == e.id and hook.requests[0].json()["followup"]["rule"] == "soon"
        assert r.zcard(keys.FOLLOWUPS_DUE) == 0


def test_burst_worker_delivers_what_is_there_and_exits(redis_url: str, tmp_path: Path) -> None:
    with LocalHTTPServer() as hook:
        config = tmp_path / "postrelay.toml"
        config.write_text(f"""
[server]
redis_url = "{redis_url}"
[destinations.hook]
type = "webhook"
url = "{hook.url}/catch"
[[routes]]
events = ["*"]
to = ["hook"]
""")
        r = redis.Redis.from_url(redis_url)
        events = [event("mailed", piece=f"b{i}") for i in range(5)]
        for e in events:
            r.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})
        proc = subprocess.run([sys.executable, "-m", "postrelay.cli", "worker", "--burst", "--config", str(config)],
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        assert sorted(req.headers["webhook-id"] for req in hook.requests) == sorted(e.id for e in events)
        assert r.zcard(keys.DELIVERIES_DUE) == 0 and r.xlen(keys.INGEST_STREAM) == 0
