"""The Redis we configure: AOF with the configured fsync policy and `noeviction`, embedded and in deploy/.

And what `noeviction` buys: a full Redis refuses writes, so the receiver answers 503 (the provider retries)
instead of Redis silently evicting accepted events, delivery jobs or dedupe markers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from postrelay.core import keys
from postrelay.core.embedded import EmbeddedRedis
from tests.receiver.harness import assert_accepted, assert_error, start_service
from tests.support import payloads as P
from tests.support.redis_server import RedisServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("fsync", ["everysec", "always"])
def test_embedded_redis_runs_with_aof_and_noeviction(tmp_path: Path, fsync: str) -> None:
    embedded = EmbeddedRedis(tmp_path, fsync).start()
    try:
        r = redis.Redis(port=embedded.port)
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("appendfsync")["appendfsync"] == fsync
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        r.close()
    finally:
        embedded.stop()


def test_deploy_configs_use_aof_everysec_and_noeviction() -> None:
    conf = (DEPLOY / "redis.conf").read_text()
    settings = dict(re.findall(r"^(appendonly|appendfsync|maxmemory-policy)\s+(\S+)", conf, re.MULTILINE))
    assert settings == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    for path in (DEPLOY / "docker-compose.yml", DEPLOY / "k8s" / "redis" / "redis-statefulset.yaml"):
        text = path.read_text()
        args = re.sub(r"[\s\"'\-\[\],]+", " ", text)
        assert "appendonly yes" in args, path
        assert "appendfsync everysec" in args or "appendfsync always" in args, path
        assert "maxmemory policy noeviction" in args, path


def test_full_redis_answers_503_and_keeps_nothing_half_done() -> None:
    server = RedisServer().start()
    svc = None
    try:
        r = redis.Redis(port=server.port)
        svc = start_service(server.url)
        r.config_set("maxmemory", 1)  # full: with noeviction every write is refused
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("probe", "1")
        svc = start_service(server.url)
        resp = svc.post_generic(P.generic_event(piece_id="mp_full"), msg_id="msg_full")
        body = assert_error(resp, 503, "redis_unavailable")
        assert "nothing was accepted" in body["detail"]
        assert resp.headers["retry-after"]
        assert r.xlen(keys.INGEST_STREAM) == 0 and not r.keys("pr:{in}:seen:*")  # no marker without its event
        r.config_set("maxmemory", 0)  # the operator adds memory; the provider's retry goes through
        assert_accepted(svc.post_generic(P.generic_event(piece_id="mp_full"), msg_id="msg_full"))
        assert r.xlen(keys.INGEST_STREAM) == 1
    finally:
        if svc is not None:
            svc.close()
        server.cleanup()
