"""Every Lua script on its own, against a real Redis: its header names each slot it uses, and it does what the
header says."""

from __future__ import annotations

import json

import pytest

from postrelay.core import keys
from postrelay.core.scripts import lua, names
from postrelay.core.stores.piece_codec import CODE

K = "hook|mev_1"


def test_every_script_names_each_slot_it_uses_in_its_header():
    assert set(names()) >= {"circuit_fail", "delivery_advance", "delivery_complete", "delivery_prepare",
                            "delivery_renew", "delivery_unlock", "due_claim", "followup_schedule", "ingest_enqueue",
                            "ratelimit_gcra"}
    for name in names():
        script = lua(name)
        header, used = script.header(), script.used()
        assert used["KEYS"] <= header["KEYS"] and used["ARGV"] <= header["ARGV"], (name, header, used)
        assert script.source.splitlines()[0].startswith("-- "), f"{name}: the first line says what it does"


def test_a_script_is_loaded_again_after_redis_forgot_it(redis_client):
    script = lua("delivery_unlock")
    assert script(redis_client, keys=["pr:lock:{x}"], args=["t"]) == 0
    redis_client.script_flush()
    assert script(redis_client, keys=["pr:lock:{x}"], args=["t"]) == 0


def _prepare(r, seq="", may_lock="1", token="tok", deadline=100.0):
    return lua("delivery_prepare")(
        r, keys=[keys.delivery_done(K), keys.delivery_record(K), keys.delivery_memo(K), keys.delivery_lock(K),
                 keys.DELIVERIES_DUE, seq or keys.delivery_record(K), keys.destination_paused("hook"),
                 keys.circuit("hook"), keys.DLQ],
        args=["mev_1", seq, token, 5000, deadline, K, may_lock, "hook"])


def test_prepare_decides_each_case(redis_client):
    r = redis_client
    seq = keys.delivery_seq("hook", "lob", "ltr_1")
    assert _prepare(r) == [b"unknown"]
    r.hset(keys.delivery_record(K), mapping={"event": "{}", "seq": seq})
    assert _prepare(r) == [b"seq", seq.encode()]  # the record's sequence wins
    r.rpush(seq, "mev_0", "mev_1")
    assert _prepare(r, seq) == [b"waiting"]  # mev_0 is ahead: both are looked at again at the deadline
    assert r.zscore(keys.DELIVERIES_DUE, K) == 100.0 and r.zscore(keys.DELIVERIES_DUE, "hook|mev_0") == 100.0
    r.lpop(seq)
    assert _prepare(r, seq, may_lock="0")[0] == b"slow"  # rate-limited or no adapter: the caller checks
    r.set(keys.destination_paused("hook"), "1")
    assert _prepare(r, seq)[0] == b"slow"
    r.delete(keys.destination_paused("hook"))
    r.hset(keys.circuit("hook"), "state", "open")
    assert _prepare(r, seq)[0] == b"slow"
    r.hset(keys.circuit("hook"), "state", "closed")
    r.hset(keys.delivery_memo(K), "contact", "c_9")
    status, record, memo = _prepare(r, seq, deadline=200.0)
    assert status == b"run" and b"event" in record and memo == [b"contact", b"c_9"]
    assert r.get(keys.delivery_lock(K)) == b"tok" and 0 < r.pttl(keys.delivery_lock(K)) <= 5000
    assert r.zscore(keys.DELIVERIES_DUE, K) == 200.0
    assert _prepare(r, seq, token="other") == [b"locked"]
    r.hset(keys.DLQ, K, "{}")
    assert _prepare(r, seq) == [b"dead", seq.encode()]
    r.set(keys.delivery_done(K), "{}")
    assert _prepare(r, seq) == [b"done", seq.encode()]


def test_complete_stores_everything_about_a_success_atomically(redis_client):
    r = redis_client
    seq = keys.delivery_seq("hook", "lob", "ltr_1")
    r.rpush(seq, "mev_1", "mev_1", "mev_2")  # a re-staged duplicate of mev_1 goes with it
    r.hset(keys.delivery_record(K), "event", "{}")
    r.set(keys.delivery_lock(K), "tok")
    r.zadd(keys.DELIVERIES_DUE, {K: 5})
    r.hset(keys.circuit("hook"), mapping={"state": "open", "failures": 3, "cooldown": 60})
    r.set(keys.circuit_probe("hook"), "1")
    head = lua("delivery_complete")(
        r, keys=[keys.delivery_done(K), keys.delivery_record(K), keys.delivery_lock(K), keys.DELIVERIES_DUE,
                 keys.circuit("hook"), keys.circuit_probe("hook"), seq, keys.STATS],
        args=['{"remote_id": "r1"}', 3600, K, "tok", 30, "mev_1", seq, "hook", 77.0, 1,
              "HINCRBY", "deliveries|hook|ok", 1])
    assert head == b"mev_2"
    assert json.loads(r.get(keys.delivery_done(K))) == {"remote_id": "r1"} and r.ttl(keys.delivery_done(K)) > 3590
    assert not r.exists(keys.delivery_record(K), keys.delivery_lock(K), keys.circuit_probe("hook"))
    assert r.zscore(keys.DELIVERIES_DUE, K) is None and r.zscore(keys.DELIVERIES_DUE, "hook|mev_2") == 77.0
    assert r.hmget(keys.circuit("hook"), "state", "failures", "cooldown") == [b"closed", b"0", b"30"]
    assert r.hget(keys.STATS, "deliveries|hook|ok") == b"1"
    assert r.lrange(seq, 0, -1) == [b"mev_2"]


def test_advance_pops_only_its_own_head(redis_client):
    r, seq = redis_client, "pr:seq:{hook:lob:p}"
    r.rpush(seq, "a", "b")
    advance = lua("delivery_advance")
    assert advance(r, keys=[seq], args=["b"]) == b"a"  # not the head: nothing moves
    assert advance(r, keys=[seq], args=["a"]) == b"b"
    assert advance(r, keys=[seq], args=["b"]) == b""


def test_lock_renew_and_unlock_only_with_our_token(redis_client):
    r, lock = redis_client, keys.delivery_lock(K)
    r.set(lock, "mine", px=1000)
    assert lua("delivery_renew")(r, keys=[lock], args=["theirs", 60000]) == 0
    assert lua("delivery_renew")(r, keys=[lock], args=["mine", 60000]) == 1 and r.pttl(lock) > 50000
    assert lua("delivery_unlock")(r, keys=[lock], args=["theirs"]) == 0 and r.exists(lock)
    assert lua("delivery_unlock")(r, keys=[lock], args=["mine"]) == 1 and not r.exists(lock)


def test_due_claim_takes_what_is_due_once_and_keeps_fractions(redis_client):
    r, due = redis_client, keys.DELIVERIES_DUE
    r.zadd(due, {"a": 100.25, "b": 100.5, "c": 101.0})
    claim = lua("due_claim")
    assert claim(r, keys=[due], args=[100.4, 30, 10]) == [b"a", b"100.25"]  # b is due at .5: not yet
    assert claim(r, keys=[due], args=[100.5, 30, 10]) == [b"b", b"100.5"]
    assert r.zscore(due, "a") == pytest.approx(130.4) and r.zscore(due, "b") == 130.5
    assert claim(r, keys=[due], args=[200, 30, 1]) == [b"c", b"101"]  # the limit, earliest first


def test_circuit_fail_opens_at_the_threshold_and_doubles_the_cooldown(redis_client):
    r = redis_client
    fail = lua("circuit_fail")
    ks = [keys.circuit("hook"), keys.circuit_probe("hook")]
    assert fail(r, keys=ks, args=[1000, 2, 30, 100, "HTTP 503"]) == 0
    assert fail(r, keys=ks, args=[1001, 2, 30, 100, "HTTP 503"]) == 1
    assert r.hmget(ks[0], "state", "cooldown", "open_until") == [b"open", b"30", b"1031"]
    r.set(ks[1], "1")
    assert fail(r, keys=ks, args=[1040, 2, 30, 100, "HTTP 500"]) == 1  # the probe failed: re-opened
    assert r.hmget(ks[0], "cooldown", "last_error") == [b"60", b"HTTP 500"] and not r.exists(ks[1])
    fail(r, keys=ks, args=[1100, 2, 30, 100, "x"])
    assert r.hget(ks[0], "cooldown") == b"100"  # capped


def test_gcra_spaces_requests(redis_client):
    r, gcra = redis_client, lua("ratelimit_gcra")
    ks = [keys.rate_limit("hook"), keys.rate_learned("hook")]
    assert gcra(r, keys=ks, args=[1000, 250, 0, 1]) == b"0"
    assert float(gcra(r, keys=ks, args=[1100, 250, 0, 1])) == 150  # the next slot is 150 ms away
    assert gcra(r, keys=ks, args=[1250, 250, 0, 0]) == b"0"  # free, only looked at
    assert gcra(r, keys=ks, args=[1250, 250, 0, 1]) == b"0"  # still free: now taken
    assert float(gcra(r, keys=ks, args=[1300, 250, 0, 1])) == 200


def test_gcra_follows_what_the_headers_taught(redis_client):
    r, gcra = redis_client, lua("ratelimit_gcra")
    ks = [keys.rate_limit("crm"), keys.rate_learned("crm")]
    assert gcra(r, keys=ks, args=[1000, 0, 0, 1]) == b"0"  # no limit configured or learned: always free
    r.hset(ks[1], mapping={"interval": 500})
    assert gcra(r, keys=ks, args=[1000, 100, 0, 1]) == b"0"
    assert float(gcra(r, keys=ks, args=[1200, 100, 0, 1])) == 300  # the learned 500 ms beats the configured 100
    r.hset(ks[1], "hold_until", 5000)
    assert float(gcra(r, keys=ks, args=[2000, 100, 0, 1])) == 3000  # held: nothing goes before 5000
    assert gcra(r, keys=ks, args=[5000, 100, 0, 1]) == b"0"


def test_followup_schedule_respects_fired_unless_and_exactness(redis_client):
    r = redis_client
    fid = "nudge|lob|p"
    ks = [keys.followup(fid), keys.FOLLOWUPS_DUE, keys.followup_piece("lob", "p"), keys.followup_fired(fid),
          keys.piece_types("lob", "p"), keys.piece("lob", "p")]
    d = CODE["delivered"]
    schedule = lua("followup_schedule")
    assert schedule(r, keys=ks, args=[fid, 500, 1, '["delivered"]', "{}", "[]", d]) == 1  # estimated
    assert schedule(r, keys=ks, args=[fid, 400, 1, '["delivered"]', "{}", "[]", d]) == 0  # another estimate: kept
    assert schedule(r, keys=ks, args=[fid, 450, 0, '["delivered"]', "{}", "[]", d]) == 1  # exact replaces it
    assert r.zscore(keys.FOLLOWUPS_DUE, fid) == 450 and r.sismember(ks[2], fid)
    assert schedule(r, keys=ks, args=["x|lob|p", 1, 0, '["delivered"]', "{}", '["delivered"]', d]) == 0  # seen
    r.sadd(ks[4], "delivered")  # the first layout's types set
    assert schedule(r, keys=[keys.followup("y|lob|p"), *ks[1:3], keys.followup_fired("y|lob|p"), *ks[4:]],
                    args=["y|lob|p", 1, 0, '["delivered"]', "{}", "[]", d]) == 0
    r.delete(ks[4])
    r.hset(ks[5], "t", CODE["mailed"] + d)  # the compact layout's type codes
    assert schedule(r, keys=[keys.followup("z|lob|p"), *ks[1:3], keys.followup_fired("z|lob|p"), *ks[4:]],
                    args=["z|lob|p", 1, 0, '["returned_to_sender", "delivered"]', "{}", "[]",
                          CODE["returned_to_sender"] + d]) == 0
    assert schedule(r, keys=[keys.followup("w|lob|p"), *ks[1:3], keys.followup_fired("w|lob|p"), *ks[4:]],
                    args=["w|lob|p", 1, 0, '["returned_to_sender"]', "{}", "[]", CODE["returned_to_sender"]]) == 1
    r.set(ks[3], "1")
    assert schedule(r, keys=ks, args=[fid, 300, 0, "[]", "{}", "[]", ""]) == 0  # fired: never again


def test_ingest_enqueue_queues_each_event_once(redis_client):
    r = redis_client
    enqueue = lua("ingest_enqueue")
    ks = [keys.INGEST_STREAM, keys.seen("a"), keys.seen("b")]
    assert enqueue(r, keys=ks, args=[60, '{"id":"a"}', '{"id":"b"}']) == b"11"
    assert enqueue(r, keys=ks, args=[60, '{"id":"a"}', '{"id":"b"}']) == b"00"
    assert r.xlen(keys.INGEST_STREAM) == 2 and 0 < r.ttl(keys.seen("a")) <= 60
