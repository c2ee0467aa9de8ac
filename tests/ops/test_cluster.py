"""Mailpieces on a real 3-master Redis Cluster, everything else on a single Redis (`[server] queue_url`).

The timeline script touches one piece's keys per call (one slot): many pieces spread over the nodes with no
CROSSSLOT error; the receiver, the dispatcher, deliveries and follow-ups work end to end across both stores.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import redis

from postrelay import cli
from postrelay.core import keys
from postrelay.core.config import parse_config
from postrelay.core.redis_url import async_client, sync_client
from postrelay.core.timeline import TimelineWriter, read_piece
from postrelay.workers.followups import DUE, FollowupHandler
from postrelay.workers.runtime import Runtime, from_config
from tests.receiver.harness import API_TOKEN, assert_accepted, assert_error, base_config, merge, start_service
from tests.support import payloads as P
from tests.support.http_server import LocalHTTPServer
from tests.support.redis_cluster import RedisCluster
from tests.workers.conftest import dispatch, drain, event, relay_handler


def piece_nodes(cluster: RedisCluster, client: redis.cluster.RedisCluster, source: str, piece_ids: list[str]) -> set[str]:
    """The nodes holding these pieces; asserts each piece's four keys share one slot."""
    nodes = set()
    for pid in piece_ids:
        names = [keys.piece(source, pid), keys.piece_timeline(source, pid), keys.piece_events(source, pid),
                 keys.piece_types(source, pid)]
        slots = {client.keyslot(name) for name in names}
        assert len(slots) == 1, (pid, slots)
        nodes.add(client.nodes_manager.get_node_from_slot(slots.pop()).name)
    return nodes


def test_timeline_on_a_cluster_spreads_pieces_over_the_nodes(cluster_url, redis_cluster):
    client = sync_client(cluster_url, 5.0)
    writer = TimelineWriter(client, retention=86400)
    pieces = [f"ltr_cluster_{i:03d}" for i in range(60)]
    day = datetime(2026, 11, 20, 10, tzinfo=UTC)

    def at(n: int) -> str:
        return (day + timedelta(days=n)).isoformat()

    # per piece, out of order and with a duplicate: processed_for_delivery, mailed, the same pfd again, in_transit
    batch = []
    for pid in pieces:
        pfd = event("processed_for_delivery", piece=pid, occurred=at(3))
        batch += [pfd, event("mailed", piece=pid, occurred=at(1)), pfd, event("in_transit", piece=pid, occurred=at(2))]
    applied = writer.apply_many(batch)  # one cluster pipeline; a CROSSSLOT error would raise here
    assert [e.stage.value for e in applied] == ["processed_for_delivery"] * len(batch)

    assert len(piece_nodes(redis_cluster, client, "lob", pieces)) >= 2
    sizes = redis_cluster.dbsizes()
    assert sum(sizes.values()) == len(pieces)  # one hash per piece
    assert sum(1 for n in sizes.values() if n) >= 2, sizes

    async def read_all() -> list[dict]:
        reader = async_client(cluster_url, 2.0)
        try:
            return [await read_piece(reader, "lob", pid) for pid in pieces]
        finally:
            await reader.aclose()

    for pid, piece in zip(pieces, asyncio.run(read_all()), strict=True):
        assert piece["id"] == pid and piece["stage"] == "processed_for_delivery"
        assert [e["type"] for e in piece["events"]] == ["mailed", "in_transit", "processed_for_delivery"]
        assert [e["stage"] for e in piece["events"]] == ["processed_for_delivery"] * 3

    # a node that lost its scripts (restart, failover, a new primary) answers NOSCRIPT: loaded again, applied once
    for port in redis_cluster.ports:
        node = redis_cluster.node(port)
        node.script_flush()
        node.close()
    late = [event("delivered", piece=pid, occurred=at(4)) for pid in pieces]
    assert {e.stage.value for e in writer.apply_many(late)} == {"delivered"}
    assert sum(redis_cluster.dbsizes().values()) == len(pieces)
    client.close()


def _posts(order: str) -> list[dict]:
    """PostGrid webhooks for one letter, out of order: processed_for_delivery, then mailed, then in_transit."""
    return [
        P.postgrid_imb_update("letter", "out_for_delivery", order_id=order, event_id=f"event_{order}_ofd",
                              imb_date="2024-05-04T08:00:00.000Z"),
        P.postgrid_status_update("letter", "processed_for_delivery", order_id=order, event_id=f"event_{order}_pfd",
                                 created_at="2024-05-02T09:00:00.000Z"),
        P.postgrid_imb_update("letter", "entered_mail_stream", order_id=order, event_id=f"event_{order}_ems",
                              imb_date="2024-05-03T07:00:00.000Z"),
    ]


def test_receiver_and_worker_with_mailpieces_on_a_cluster(cluster_url, redis_url, redis_client, redis_cluster,
                                                          tmp_path, capsys):
    orders = [f"letter_cl{i:02d}" for i in range(12)]
    with LocalHTTPServer() as crm:
        data = merge(base_config(cluster_url), {
            "server": {"queue_url": redis_url},
            "destinations": {"crm": {"type": "webhook", "url": crm.url}},
            "routes": [{"events": ["*"], "to": ["crm"]}],
            "followups": [{"name": "nudge", "after": "mailed", "unless": ["processed_for_delivery"],
                           "delay": "2 days", "do": "crm"}],
        })
        svc = start_service(redis_url, config_data=data)  # svc.redis inspects the queue Redis
        rt = from_config(svc.config)
        try:
            for order in orders:
                for webhook in _posts(order):
                    assert_accepted(svc.post_postgrid(webhook))
            assert_accepted(svc.post_postgrid(_posts(orders[0])[1]), accepted=0, duplicates=1)  # a provider retry
            # a letter that was only mailed: its follow-up is scheduled (no processed_for_delivery on the cluster)
            assert_accepted(svc.post_postgrid(P.postgrid_status_update(
                "letter", "processed_for_delivery", order_id="letter_only_mailed", event_id="event_only_mailed",
                created_at="2024-05-02T09:00:00.000Z")))
            assert svc.stream_len() == 3 * len(orders) + 1

            dispatch(rt, handlers=[*_relay(rt), FollowupHandler(rt)])
            drain(rt)

            ids = [r.headers["webhook-id"] for r in crm.requests]
            assert len(ids) == 3 * len(orders) + 1 == len(set(ids))  # every event relayed once, none twice
            for order in orders:
                resp = svc.get_piece("postgrid", order)
                assert resp.status_code == 200, resp.text
                piece = resp.json()
                assert piece["stage"] == "processed_for_delivery"  # a late in_transit never moves it back
                assert [e["type"] for e in piece["events"]] == ["mailed", "in_transit", "processed_for_delivery"]
            assert_error(svc.get_piece("postgrid", "letter_unknown"), 404, "mailpiece_not_found")

            # follow-ups: the `unless` types were read from the cluster
            assert [i.decode() for i in redis_client.zrange(DUE, 0, -1)] == ["nudge|postgrid|letter_only_mailed"]

            # where everything lives: pieces on the cluster (over several nodes), none on the queue Redis
            assert redis_client.keys("pr:piece:*") == []
            assert redis_client.exists(keys.INGEST_STREAM) and redis_client.keys("pr:done:*")
            assert len(piece_nodes(redis_cluster, rt.pieces, "postgrid", orders)) >= 2
            assert sum(redis_cluster.dbsizes().values()) == len(orders) + 1  # one hash per piece
            assert redis_client.keys("pr:{in}:seen:*")  # dedupe markers beside the stream

            ready = svc.http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready", "redis": "ok", "pieces": "ok"}
        finally:
            rt.close()
            svc.close()

    cfg = tmp_path / "cluster.toml"
    cfg.write_text(f'[server]\nredis_url = "{cluster_url}"\nqueue_url = "{redis_url}"\n', encoding="utf-8")
    assert cli.main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"(redis {redis_url})" in out
    assert f"mailpieces         {cluster_url} (Redis Cluster): 3 primaries, {len(orders) + 1} keys" in out
    assert cli.main(["status", "--config", str(cfg), "--json"]) == 0
    nodes = json.loads(capsys.readouterr().out)["pieces"]["nodes"]
    assert sorted(n["node"] for n in nodes) == sorted(f"127.0.0.1:{p}" for p in redis_cluster.ports)


def _relay(rt: Runtime) -> list:

    return [relay_handler(rt)]


def test_unreachable_cluster_keeps_ingest_and_fails_reads_and_readiness(redis_url, redis_client):
    data = merge(base_config("redis+cluster://127.0.0.1:1/"), {"server": {"queue_url": redis_url}})
    svc = start_service(redis_url, config_data=data)
    try:
        webhook = P.postgrid_status_update("letter", "processed_for_delivery", order_id="letter_down")
        assert_accepted(svc.post_postgrid(webhook))  # ingest needs only the queue Redis
        assert svc.stream_len() == 1
        body = assert_error(svc.get_piece("postgrid", "letter_down"), 503, "redis_unavailable")
        assert "unreachable" in body["detail"]
        resp = svc.http.get("/readyz")
        assert resp.status_code == 503 and resp.headers["retry-after"] == "17"
        assert resp.json() == {"status": "unavailable", "redis": "ok", "failed": ["pieces"],
                               "pieces": "unreachable (RedisClusterException)"}
        assert svc.http.get("/readyz", params={"check": "redis"}).status_code == 200  # load balancers keep it
        assert svc.http.get("/v1/mailpieces/postgrid/x", headers={"Authorization": f"Bearer {API_TOKEN}x"}
                            ).status_code == 401
    finally:
        svc.close()
    assert parse_config(data).server.split_stores


def test_migrate_on_a_cluster_moves_every_node_s_pieces(cluster_url, redis_cluster):
    from postrelay.core.stores.migrate import migrate
    from postrelay.core.timeline import load_piece
    from postrelay.core.timeline_legacy import LegacyTimelineWriter

    client = sync_client(cluster_url, 5.0)
    pieces = [f"ltr_mig_{i:03d}" for i in range(30)]
    LegacyTimelineWriter(client, 3600).apply_many(
        [e for pid in pieces for e in (event("mailed", piece=pid), event("in_transit", piece=pid))])
    before = {pid: load_piece(client, "lob", pid) for pid in pieces}
    assert sum(redis_cluster.dbsizes().values()) == 4 * len(pieces)
    counts = migrate(client)
    assert counts["migrated"] == len(pieces) and counts["left"] == 0
    assert {pid: load_piece(client, "lob", pid) for pid in pieces} == before
    assert sum(redis_cluster.dbsizes().values()) == len(pieces) + 1  # one hash per piece, and pr:migrate
    client.close()
