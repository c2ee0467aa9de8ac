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

from postrelay import keys
from tests.support.http_server import LocalHTTPServer, Reply
from tests.workers.conftest import event
from workers import deliveries


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
            done = deliveries.done_key(deliveries.delivery_key("hook", e.id))
            assert _wait(lambda: r.exists(done), 30), "the delivery was not completed after the crash"
            recovery = time.monotonic() - started
            time.sleep(1.0)
        finally:
            _kill(worker)
        ids = {req.headers["webhook-id"] for req in hook.requests}
        assert ids == {e.id}
        assert len(hook.requests) == 2  # the interrupted attempt and the one that completed; no more
        assert recovery < 20  # lease 2 s + housekeeping every 2 s, not RQ's 10-minute maintenance
        assert r.zcard(keys.piece_timeline("lob", "ltr_1")) == 1
