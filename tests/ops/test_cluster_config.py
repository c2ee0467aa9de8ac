"""Redis Cluster URLs and `[server] queue_url`: parsing, clients, and config validation naming the key."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import redis.asyncio.cluster
import redis.cluster

from postrelay import cli
from postrelay.cli.status import pieces_store
from postrelay.core.config import ConfigError, load_runtime_config, parse_config
from postrelay.core.logs import config_secrets
from postrelay.core.redis_url import async_client, is_cluster, is_cluster_url, parse_cluster_url, sync_client
from postrelay.workers.runtime import from_config


def test_cluster_url_startup_nodes():
    c = parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,redis-2.redis:7002/")
    assert c.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("redis-2.redis", 7002)]
    assert (c.username, c.password, c.ssl, c.tls) == (None, None, False, {})
    assert parse_cluster_url("redis+cluster://h1").nodes == [("h1", 6379)]  # no path, default port
    assert parse_cluster_url("redis+cluster://h1:7000/0").nodes == [("h1", 7000)]
    assert parse_cluster_url("redis+cluster://[::1]:7000,h2:7001").nodes == [("::1", 7000), ("h2", 7001)]


def test_cluster_url_tls_and_credentials():
    c = parse_cluster_url("rediss+cluster://postrelay:p%40ss%3Aw0rd@h1:7000,h2:7001/"
                          "?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false")
    assert c.ssl and c.username == "postrelay" and c.password == "p@ss:w0rd"
    assert c.tls == {"ssl_cert_reqs": "none", "ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": False}
    c = parse_cluster_url("redis+cluster://:only-a-password@h1:7000")
    assert (c.username, c.password, c.ssl) == (None, "only-a-password", False)
    assert is_cluster_url("REDIS+CLUSTER://h:1") and is_cluster_url("rediss+cluster://h:1")
    assert not is_cluster_url("redis://h:1/0") and not is_cluster_url("redis+sentinel://h:1/m") and not is_cluster_url(None)


@pytest.mark.parametrize(("url", "message"), [
    ("redis+cluster://", "no startup node"),
    ("redis+cluster://:secret-pw@/", "no startup node"),
    ("redis+cluster://h1:7000,h2:port", "port 'port' of 'h2' is not a number"),
    ("redis+cluster://h1:70000", "port 70000 of 'h1' is out of range"),
    ("redis+cluster://h1:7000/2", "a cluster has only database 0"),
    ("redis+cluster://h1:7000/?db=1", "unknown query parameter 'db'"),
    ("redis+cluster://h1:7000/?ssl_cert_reqs=none", "TLS parameters need rediss+cluster://"),
    ("redis://h1:7000", "starts with redis+cluster:// or rediss+cluster://"),
])
def test_bad_cluster_urls_say_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_cluster_url(url)
    assert "secret-pw" not in str(info.value)


def test_clients_from_a_cluster_url(cluster_url, redis_cluster):
    sync = sync_client(cluster_url, 2.0)
    try:
        assert isinstance(sync, redis.cluster.RedisCluster) and is_cluster(sync)
        assert sorted(n.port for n in sync.get_primaries()) == sorted(redis_cluster.ports)  # discovered all
        sync.set("pr:probe:{a}", "1")
        assert sync.get("pr:probe:{a}") == b"1"
    finally:
        sync.close()

    async def roundtrip() -> bytes | None:
        client = async_client(cluster_url, 1.0)
        assert isinstance(client, redis.asyncio.cluster.RedisCluster) and is_cluster(client)
        try:
            return await client.get("pr:probe:{a}")
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == b"1"


def test_unreachable_cluster_fails_fast_with_a_clear_error():
    async def get() -> None:
        client = async_client("redis+cluster://127.0.0.1:1/", 0.5)  # lazy: nothing connects before a command
        try:
            await client.get("k")
        finally:
            await client.aclose()

    with pytest.raises(redis.exceptions.RedisClusterException, match="cannot be connected"):
        asyncio.run(get())


def server(**kw: str) -> dict:
    return {"server": kw}


def test_queue_url_defaults_to_redis_url():
    s = parse_config(server(redis_url="redis://db:6379/0")).server
    assert s.queue_url is None and s.queue_redis_url == "redis://db:6379/0" and not s.split_stores
    s = parse_config(server(redis_url="redis+cluster://c1:7000,c2:7000/", queue_url="redis://q:6379/0")).server
    assert s.queue_redis_url == "redis://q:6379/0" and s.split_stores
    s = parse_config(server(redis_url="redis+cluster://c1:7000/", queue_url="redis+sentinel://s1:26379/q/0")).server
    assert s.split_stores


@pytest.mark.parametrize(("srv", "message"), [
    ({"redis_url": "redis+cluster://c1:7000,c2:7000/"},
     "server.queue_url: required when server.redis_url is a Redis Cluster"),
    ({"redis_url": "redis+cluster://c1:7000/", "queue_url": "redis+cluster://c2:7000/"},
     "server.queue_url: must be a single Redis"),
    ({"redis_url": "redis://db:6379/0", "queue_url": "rediss+cluster://c2:7000/"},
     "server.queue_url: must be a single Redis"),
    ({"redis_url": "redis+cluster://c1:x/", "queue_url": "redis://q:6379/0"},
     "server.redis_url: Redis Cluster URL 'redis+cluster://c1:x/': port 'x'"),
])
def test_invalid_cluster_configs_name_the_key(srv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(server(**srv))


def test_queue_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nredis_url = "redis+cluster://c1:7000,c2:7000/"\nqueue_url = "redis://q:6379/0"\n',
                   encoding="utf-8")
    monkeypatch.setenv("POSTRELAY_QUEUE_URL", "redis://:queue-secret-pw@other:6379/1")
    config = load_runtime_config(cfg)
    assert config.server.queue_redis_url == "redis://:queue-secret-pw@other:6379/1"
    assert "queue-secret-pw" in config_secrets(config)  # redacted from logs like redis_url's password

    monkeypatch.setenv("POSTRELAY_QUEUE_URL", "redis+cluster://c3:7000/")
    with pytest.raises(ConfigError, match=re.escape("server.queue_url: must be a single Redis")):
        load_runtime_config(cfg)

    cfg.write_text('[server]\nredis_url = "redis+cluster://c1:7000/"\n', encoding="utf-8")
    monkeypatch.delenv("POSTRELAY_QUEUE_URL")
    assert cli.main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"config error: {cfg}: server.queue_url: required when server.redis_url is a Redis Cluster")


def test_worker_runtime_and_status_use_both_stores(cluster_url, redis_url, redis_cluster):
    config = parse_config(server(redis_url=cluster_url, queue_url=redis_url))
    rt = from_config(config)
    try:
        assert not is_cluster(rt.redis) and is_cluster(rt.pieces)
        assert rt.breaker.redis is rt.redis  # deliveries and their circuits stay on the single Redis
        store = pieces_store(rt)
        assert store is not None and store["cluster"]
        assert sorted(n["node"] for n in store["nodes"]) == sorted(f"127.0.0.1:{p}" for p in redis_cluster.ports)
    finally:
        rt.close()
    rt = from_config(parse_config(server(redis_url=redis_url)))
    try:
        assert rt.pieces is rt.redis and pieces_store(rt) is None  # one Redis: one client, nothing changes
    finally:
        rt.close()


def test_the_receivers_asyncio_client_keeps_the_python_reply_parser():
    """hiredis is installed for the worker; the asyncio path measured slower with it (bench/RESULTS.md)."""
    import asyncio

    from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser

    from postrelay.core.redis_url import async_client

    resp3 = async_client("redis://127.0.0.1:1/0", 0.5)
    resp2 = async_client("redis://127.0.0.1:1/0?protocol=2", 0.5)
    assert resp3.connection_pool.connection_kwargs["parser_class"] is _AsyncRESP3Parser
    assert resp2.connection_pool.connection_kwargs["parser_class"] is _AsyncRESP2Parser
    asyncio.run(resp3.aclose())
    asyncio.run(resp2.aclose())
