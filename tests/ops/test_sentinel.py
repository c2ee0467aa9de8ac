"""`redis+sentinel://` end to end: a real redis-sentinel in front of the test Redis, for receiver, worker and CLI."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from postrelay import cli
from postrelay.core.config import parse_config
from postrelay.core.redis_url import sync_client
from postrelay.workers.runtime import Runtime
from tests.receiver.harness import base_config, merge, start_service
from tests.support import payloads
from tests.support.http_server import LocalHTTPServer
from tests.support.redis_server import RedisServer, free_port, redis_binary
from tests.workers.conftest import dispatch, drain


@pytest.fixture
def sentinel_url(redis_url: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor pr-master 127.0.0.1 {redis_server.port} 1\n"
                    "sentinel down-after-milliseconds pr-master 60000\n", encoding="utf-8")
    proc = subprocess.Popen([redis_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.sentinel_get_master_addr_by_name("pr-master"):
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("redis-server --sentinel did not start")
            time.sleep(0.05)
        client.close()
        yield f"redis+sentinel://127.0.0.1:{port}/pr-master/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_receiver_worker_and_status_through_sentinel(sentinel_url, redis_url, redis_client, tmp_path, capsys):
    with LocalHTTPServer() as crm:
        data = merge(base_config(sentinel_url), {"destinations": {"crm": {"type": "webhook", "url": crm.url}},
                                                 "routes": [{"events": ["*"], "to": ["crm"]}]})
        # the app connects through the sentinel (config); the harness' own inspection client goes direct
        svc = start_service(redis_url, config_data=data)
        try:
            body = payloads.lob_mailpiece("letter", "ltr_sentinel")
            resp = svc.post_lob(payloads.lob_event("letter.mailed", body, event_id="evt_sentinel"))
            assert resp.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
            assert svc.http.get("/readyz").status_code == 200
            assert "postrelay_redis_up 1.0" in svc.http.get("/metrics").text
        finally:
            svc.close()
        assert redis_client.xlen("pr:{in}:stream") == 1  # it landed in the master behind the sentinel

        rt = Runtime(config=parse_config(data), redis=sync_client(sentinel_url, None))
        try:
            dispatch(rt)
            drain(rt)
        finally:
            rt.close()
        assert len(crm.requests) == 1

    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(f'[server]\nredis_url = "{sentinel_url}"\n', encoding="utf-8")
    assert cli.main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "events, last hour  1: mailed 1" in out
