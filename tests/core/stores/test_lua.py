"""Every Lua script on its own, against a real Redis: its header names each slot it uses, and it does what the
header says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from postrelay.core import keys
from postrelay.core.scripts import Lua, literal, lua, names
from postrelay.core.stores.indexes import LUA_CONSTANTS
from postrelay.core.stores.piece_codec import CODE
from postrelay.core.timeline import APPLY_CONSTANTS
from postrelay.core.timeline_legacy import APPLY_CONSTANTS as LEGACY_CONSTANTS

K = "hook|mev_1"
# The scripts that take constants, with the ones their owners pass (`postrelay.core.scripts`)
CONSTANTS = {"timeline_apply": APPLY_CONSTANTS, "index_apply": LUA_CONSTANTS,
             "timeline_legacy_apply": LEGACY_CONSTANTS}


def script_of(name: str) -> Lua:
    return lua(name, **CONSTANTS.get(name, {}))


def test_every_script_names_each_slot_it_uses_in_its_header():
    assert set(names()) >= {"circuit_fail", "delivery_advance", "delivery_complete", "delivery_prepare",
                            "delivery_renew", "delivery_unlock", "due_claim", "followup_schedule", "ingest_enqueue",
                            "ratelimit_gcra", "timeline_apply", "index_apply", "piece_migrate",
                            "timeline_legacy_apply"}
    for name in names():
        script = script_of(name)
        header, used = script.header(), script.used()
        assert used["KEYS"] <= header["KEYS"] and used["ARGV"] <= header["ARGV"], (name, header, used)
        assert script.source.splitlines()[0].startswith("-- "), f"{name}: the first line says what it does"
        assert not re.search(r"\{\{[A-Z]", script.source), f"{name}: a placeholder left"


def test_every_script_has_a_direct_test():
    """Each script in postrelay/core/lua/ is called by name (`lua("<name>"`) in a test of this folder."""
    here = Path(__file__).parent
    called = {m for f in here.glob("test_*.py") for m in re.findall(r'lua\("([a-z_]+)"', f.read_text())}
    assert set(names()) - called == set(), "scripts without a direct test here"


def test_constants_are_put_in_as_lua_literals_once_per_name_and_values():
    assert literal({"a": 1, "in_transit": True, "end": 2.5, "x-y": "it's"}) == \
        "{a=1, in_transit=true, ['end']=2.5, ['x-y']='it\\039s'}"
    assert literal([["a", 1], ("b", False)]) == "{{'a', 1}, {'b', false}}"
    assert literal("é\n\\") == "'é\\010\\092'"
    with pytest.raises(TypeError):
        literal(object())
    with pytest.raises(TypeError):
        literal(float("nan"))
    assert lua("timeline_apply", **APPLY_CONSTANTS) is lua("timeline_apply", **dict(reversed(APPLY_CONSTANTS.items())))
    assert "local RANK = {a=10, " in lua("timeline_apply", **APPLY_CONSTANTS).source
    other = lua("timeline_apply", **{**APPLY_CONSTANTS, "CHUNK": 10})
    assert other.sha != lua("timeline_apply", **APPLY_CONSTANTS).sha and "string.sub(v, 1, 10)" in other.source


def test_a_missing_or_unknown_constant_is_an_error_when_loading():
    with pytest.raises(ValueError, match=r"no value for \['CHUNK'\]"):
        lua("timeline_apply", **{k: v for k, v in APPLY_CONSTANTS.items() if k != "CHUNK"})
    with pytest.raises(ValueError, match=r"no placeholder for \['NOPE'\]"):
        lua("piece_migrate", NOPE=1)


def test_literals_reach_lua_unchanged(redis_client):
    value = {"s": "it's \\ a\n\"b\" é", "n": -3, "f": 0.25, "t": True, "l": ["x", 2]}
    lit = literal(value)
    got = redis_client.eval(f"return cjson.encode({lit})", 0)
    assert json.loads(got) == value


def test_a_script_is_loaded_again_after_redis_forgot_it(redis_client):
    script = lua("delivery_unlock")
    assert script(redis_client, keys=["pr:lock:{x}"], args=["t"]) == 0
    redis_client.script_flush()
    assert script(redis_client, keys=["pr:lock:{x}"], args=["t"]) == 0


def _prepare(r, seq="", may_lock="1", token="tok", deadline=100.0, now_ms=1000, interval_ms=0):
    return lua("delivery_prepare")(
        r, keys=[keys.delivery_done(K), keys.delivery_record(K), keys.delivery_memo(K), keys.delivery_lock(K),
                 keys.DELIVERIES_DUE, seq or keys.delivery_record(K), keys.destination_paused("hook"),
                 keys.circuit("hook"), keys.DLQ, keys.rate_limit("hook"), keys.rate_learned("hook")],
        args=["mev_1", seq, token, 5000, deadline, K, may_lock, "hook", now_ms, interval_ms, 0])


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


def test_prepare_runs_a_rate_limited_delivery_only_when_a_slot_is_free_now(redis_client):
    r = redis_client
    r.hset(keys.delivery_record(K), "event", "{}")
    assert _prepare(r, may_lock="2")[0] == b"run"  # nothing configured or learned: free
    assert not r.exists(keys.rate_limit("hook"))  # only looked at: each of the adapter's calls takes its slot
    r.delete(keys.delivery_lock(K))
    r.set(keys.rate_limit("hook"), 1500)  # the next slot is at 1500 ms
    assert _prepare(r, may_lock="2", now_ms=1000, interval_ms=250)[0] == b"slow"
    assert not r.exists(keys.delivery_lock(K))  # not locked: the caller waits or reschedules
    assert _prepare(r, may_lock="2", now_ms=1500, interval_ms=250)[0] == b"run"
    r.delete(keys.delivery_lock(K))
    r.hset(keys.rate_learned("hook"), "hold_until", 9000)  # the headers said the budget is spent
    assert _prepare(r, may_lock="2", now_ms=2000)[0] == b"slow"
    assert _prepare(r, may_lock="1", now_ms=2000)[0] == b"run"  # no rate limit on this destination's adapter


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


# --- the mailpiece scripts (`postrelay.core.timeline`, `.stores.indexes`, `.stores.migrate`, `.timeline_legacy`)

PIECE = keys.piece_keys("lob", "ltr_1")
MEMBER = keys.piece_member("lob", "ltr_1")


def _apply(r, eid, code, rank, part="[1]", pr="", head="H", tail="T", whole=0, ttl=0, index=()):
    return lua("timeline_apply", **APPLY_CONSTANTS)(
        r, keys=PIECE, args=[eid, code, rank, "tc", whole, part, pr, head, tail, ttl,
                             *((1, *index) if index else (0,))])


def _fields(r, key=PIECE[0]):
    return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


def test_timeline_apply_records_once_and_moves_the_stage_only_forward(redis_client):
    r = redis_client
    assert _apply(r, "e1", CODE["mailed"], 40) == [1, b"d", b"[1]"]
    assert _fields(r) == {"s": "dtc", "t": "d", "u": "0", "_0": "[1]", "e1": "dH0,T"}
    assert _apply(r, "e1", CODE["delivered"], 80, part="[9]") == [0, b"d", b"[1]"]  # recorded: nothing changes
    assert _fields(r) == {"s": "dtc", "t": "d", "u": "0", "_0": "[1]", "e1": "dH0,T"}
    # an earlier stage arriving late: recorded with the piece's stage, a new part and a postrelay blob
    assert _apply(r, "e2", CODE["created"], 10, part="[2]", pr='{"x":1}') == [1, b"d", b"[2]", b"[1]"]
    f = _fields(r)
    assert (f["s"], f["t"], f["u"], f["_1"], f["_2"], f["e2"]) == ("dtc", "da", "1,0", "[2]", '{"x":1}', "dH1,2T")
    # a part already stored is referenced again (most recently used first), an unranked type keeps the stage
    assert _apply(r, "e3", CODE["purl_opened"], 0, part="[1]") == [1, b"d", b"[1]", b"[2]"]
    assert _fields(r)["e3"] == "dH0,T" and _fields(r)["t"] == "dam" and "_3" not in _fields(r)


def test_timeline_apply_keeps_a_terminal_stage(redis_client):
    r = redis_client
    _apply(r, "e1", CODE["returned_to_sender"], 90)
    assert _apply(r, "e2", CODE["delivered"], 80)[1] == b"j"
    assert _apply(r, "e3", CODE["cancelled"], 90)[1] == b"j"
    assert _apply(r, "e4", "z", 95)[1] == b"j"  # not even a higher rank
    assert _fields(r)["s"] == "jtc" and _fields(r)["e4"] == "jH0,T"


def test_timeline_apply_splits_long_values_into_chunks_and_stores_whole_events(redis_client):
    r = redis_client
    whole = "W" * 63 + "X" * 63 + "Y"
    assert _apply(r, "e1", CODE["mailed"], 40, part=whole, whole=1) == [1, b"d", whole.encode()]
    f = _fields(r)
    assert (f["_0"], f["_0.1"], f["_0.2"], f["e1"]) == ("W" * 63, "X" * 63, "Y", "d!0")
    assert max(len(v) for v in f.values()) <= 63
    head = "h" * 70  # a record longer than a chunk
    _apply(r, "e2", CODE["in_transit"], 50, head=head)
    f = _fields(r)
    assert f["e2"] + f["e2.1"] == "e" + head + "1,T" and "e2.2" not in f
    assert _apply(r, "e3", CODE["in_transit"], 50, part=whole, whole=1)[2] == whole.encode()  # the same blob, read whole
    assert _fields(r)["e3"] == "e!0"


def test_timeline_apply_answers_minus_one_for_the_first_layout_and_sets_the_retention(redis_client):
    r = redis_client
    r.hset(PIECE[2], "old", "{}")
    assert _apply(r, "e1", CODE["mailed"], 40, ttl=60) == [-1]
    assert not r.exists(PIECE[0])
    r.delete(PIECE[2])
    _apply(r, "e1", CODE["mailed"], 40, ttl=60)
    assert 0 < r.ttl(PIECE[0]) <= 60
    _apply(r, "e2", CODE["delivered"], 80)
    assert r.ttl(PIECE[0]) > 0  # retention 0: the TTL is left as it was


def test_timeline_apply_indexes_in_the_piece_hash_when_asked(redis_client):
    r = redis_client
    ix = [MEMBER, "lob", "mailed", 40, 0, 1000.0, "2024-05-06", "c1", "a@x.test", "Ann", "ann"]
    _apply(r, "e1", CODE["mailed"], 40, index=ix)
    assert _fields(r)["ix_s"] == "mailed" and _fields(r)["campaign"] == "c1"
    assert r.zscore(keys.INDEX_ALL, MEMBER) == 1000.0 and r.hget(keys.campaign_funnel("c1"), "mailed") == b"1"
    _apply(r, "e2", CODE["created"], 10)
    assert r.hget(keys.campaign_funnel("c1"), "created") == b"1"  # not indexed: no index argument


def _index(r, etype, rank, at, camp="c1", terminal=0, email="", name="", words="", ttl=0, state=None):
    from datetime import UTC, datetime

    day = datetime.fromtimestamp(at, UTC).date().isoformat()
    return lua("index_apply", **LUA_CONSTANTS)(
        r, keys=[state or keys.index_state("lob", "ltr_1")],
        args=[MEMBER, "lob", etype, rank, terminal, at, day, camp, email, name, words, ttl])


def _snapshot(r):
    out = {}
    for k in sorted(r.keys("*")):
        t = r.type(k)
        out[k] = (r.hgetall(k) if t == b"hash" else r.zrange(k, 0, -1, withscores=True))
    return out


def test_index_apply_counts_each_piece_once_per_stage_it_reached(redis_client):
    r, funnel, days = redis_client, keys.campaign_funnel("c1"), keys.campaign_days("c1")
    t0 = 1_714_953_600.0  # 2024-05-06
    assert _index(r, "mailed", 40, t0, email="a@x.test", name="Ann Lee", words="ann lee", ttl=60) == 1
    assert r.hgetall(funnel) == {b"pieces": b"1", b"created": b"1", b"addressed": b"1", b"printed": b"1",
                                 b"mailed": b"1"}  # a mailed piece was created, addressed and printed
    assert r.hget(days, "mailed|2024-05-06") == b"1"
    for key in (keys.INDEX_ALL, keys.index_set("src", "lob"), keys.index_set("stage", "mailed"),
                keys.index_set("camp", "c1"), keys.index_set("email", "a@x.test"), keys.index_set("name", "ann"),
                keys.index_set("name", "lee")):
        assert r.zscore(key, MEMBER) == t0, key
    assert r.zscore(keys.INDEX_CAMPAIGNS, "c1") == t0 and 0 < r.ttl(keys.index_state("lob", "ltr_1")) <= 60
    before = _snapshot(r)
    _index(r, "mailed", 40, t0, email="a@x.test", name="Ann Lee", words="ann lee", ttl=60)
    assert _snapshot(r) == before  # a duplicate changes nothing
    _index(r, "created", 10, t0 - 3600)  # late and earlier: the piece's first time moves back, no count moves
    assert r.hget(funnel, "created") == b"1" and r.zscore(keys.INDEX_ALL, MEMBER) == t0 - 3600
    _index(r, "processed_for_delivery", 70, t0 + 2.55 * 86400)
    assert r.zscore(keys.index_set("stage", "mailed"), MEMBER) is None
    assert r.hget(funnel, "in_transit") == b"1" and r.hget(funnel, "processed_for_delivery") == b"1"
    assert r.hgetall(keys.campaign_transit("c1")) == {b"2.5": b"1"}  # mailed -> processed, tenths of a day
    _index(r, "mailed", 40, t0 - 86400)  # an earlier mailed: the transit bucket moves
    assert r.hgetall(keys.campaign_transit("c1")) == {b"3.5": b"1"}


def test_index_apply_flags_terminal_and_engagement_types_once_and_joins_a_late_campaign(redis_client):
    r, funnel = redis_client, keys.campaign_funnel("c1")
    t0 = 1_714_953_600.0
    _index(r, "returned_to_sender", 90, t0, camp="", terminal=1)
    _index(r, "purl_opened", 0, t0 + 1, camp="")
    assert not r.exists(funnel)  # no campaign yet
    assert r.zscore(keys.index_set("stage", "returned_to_sender"), MEMBER) == t0
    _index(r, "purl_opened", 0, t0 + 2)  # the campaign arrives: the piece joins it with all it had
    assert r.hgetall(funnel) == {b"pieces": b"1", b"returned_to_sender": b"1", b"purl_opened": b"1",
                                 b"created": b"1", b"addressed": b"1", b"printed": b"1", b"mailed": b"1"}
    _index(r, "delivered", 80, t0 + 3)  # after a terminal stage: reached counts, the stage stays
    assert r.hget(funnel, "delivered") == b"1" and r.hget(funnel, "returned_to_sender") == b"1"
    assert r.zscore(keys.index_set("stage", "returned_to_sender"), MEMBER) == t0
    assert r.ttl(keys.index_state("lob", "ltr_1")) == -1  # retention 0: kept
    state = {k.decode(): v.decode() for k, v in r.hgetall(keys.index_state("lob", "ltr_1")).items()}
    assert state["ix_x"] == CODE["returned_to_sender"] + CODE["purl_opened"]
    r.hset(keys.index_state("lob", "ltr_1"), "ix_x", "|returned_to_sender|purl_opened|")  # the older flag format
    _index(r, "purl_opened", 0, t0 + 4)
    assert r.hget(funnel, "purl_opened") == b"1"


def test_piece_migrate_moves_a_piece_only_as_it_was_read(redis_client):
    r, migrate = redis_client, lua("piece_migrate")
    assert migrate(r, keys=PIECE, args=[0, -1, 0]) == 0  # no events: nothing to move
    r.hset(PIECE[0], mapping={"stage": "mailed", "kind": "letter", "campaign": "c1"})
    r.hset(PIECE[2], mapping={"e1": "{}", "e2": "{}"})
    r.zadd(PIECE[1], {"e1": 1, "e2": 2})
    r.sadd(PIECE[3], "mailed")
    r.pexpire(PIECE[0], 50_000)
    assert migrate(r, keys=PIECE, args=[1, 50_000, 1, "stage", "s", "dtc"]) == -1  # an event more than read
    assert r.hget(PIECE[0], "stage") == b"mailed" and r.exists(PIECE[1], PIECE[2], PIECE[3]) == 3
    assert migrate(r, keys=PIECE, args=[2, 40_000, 2, "stage", "kind", "s", "dtc", "t", "d"]) == 1
    assert _fields(r) == {"campaign": "c1", "s": "dtc", "t": "d"}  # the index state stays
    assert r.exists(PIECE[1], PIECE[2], PIECE[3]) == 0 and 0 < r.pttl(PIECE[0]) <= 40_000
    r.hset(PIECE[2], "e1", "{}")
    r.persist(PIECE[0])
    assert migrate(r, keys=PIECE, args=[1, -1, 0, "u", "0"]) == 1 and r.ttl(PIECE[0]) == -1  # no TTL: none set


def _legacy(r, eid, etype, rank, terminal=0, at=100.0, kind="", country="", ttl=0, extra=()):
    return lua("timeline_legacy_apply", **LEGACY_CONSTANTS)(
        r, keys=PIECE, args=[eid, at, etype, rank, terminal, '{"id":"' + eid + '","stage":', "}", kind, country,
                             f"iso{at}", ttl, *extra])


def test_timeline_legacy_apply_writes_the_first_layout(redis_client):
    r = redis_client
    fields = LEGACY_CONSTANTS["FIELDS"]
    applied, stage, attrs = _legacy(r, "e1", "mailed", 40, at=200.0, kind="letter", country="US",
                                    extra=("recipient.name", "Ann"), ttl=60)
    assert (applied, stage) == (1, b"mailed") and len(attrs) == len(fields)
    assert dict(zip(fields, attrs, strict=True)) == {f: None for f in fields} | {
        "kind": b"letter", "country": b"US", "recipient.name": b"Ann"}
    assert r.hget(PIECE[2], "e1") == b'{"id":"e1","stage":"mailed"}'
    assert r.zrange(PIECE[1], 0, -1, withscores=True) == [(b"e1", 200.0)] and r.smembers(PIECE[3]) == {b"mailed"}
    assert r.hmget(PIECE[0], "stage_rank", "stage_terminal", "stage_at", "first_seen") == [
        b"40", b"0", b"iso200.0", b"iso200.0"]
    assert all(0 < r.ttl(k) <= 60 for k in PIECE)
    assert _legacy(r, "e1", "delivered", 80)[:2] == [0, b"mailed"]  # recorded: nothing changes
    assert _legacy(r, "e2", "created", 10, at=50.0)[:2] == [1, b"mailed"]  # late: the stage stays
    assert r.hget(PIECE[2], "e2") == b'{"id":"e2","stage":"mailed"}' and r.hget(PIECE[0], "first_seen") == b"iso200.0"
    assert r.zrange(PIECE[1], 0, -1) == [b"e2", b"e1"]
    assert _legacy(r, "e3", "returned_to_sender", 90, terminal=1)[1] == b"returned_to_sender"
    assert _legacy(r, "e4", "other", 95)[1] == b"returned_to_sender"  # terminal: sticky
    assert r.smembers(PIECE[3]) == {b"mailed", b"created", b"returned_to_sender", b"other"}


def test_timeline_legacy_apply_stores_null_for_a_piece_without_stage(redis_client):
    assert _legacy(redis_client, "e1", "purl_opened", 0)[:2] == [1, b""]
    assert redis_client.hget(PIECE[2], "e1") == b'{"id":"e1","stage":null}'


# --- mailings (`postrelay.core.stores.mailings`)

ML = keys.mailing("ml_1")


def _create(r, fields=None, now=1000, retention=3600, cooldown=0, queued="1", marker=None, mid="ml_1"):
    fields = fields or {"id": mid, "status": "queued", "fingerprint": "fp"}
    return lua("mailing_create")(r, keys=[keys.mailing(mid), keys.MAILINGS_DUE, keys.MAILINGS_INDEX,
                                          marker or keys.mailing(mid)],
                                 args=[mid, json.dumps(fields), now, retention, cooldown, queued])


def test_mailing_create_stores_once_and_respects_a_cooldown(redis_client):
    r = redis_client
    r.zadd(keys.MAILINGS_INDEX, {"ml_old": -2600, "ml_kept": -2599})  # as old as the retention: dropped
    assert _create(r) == [b"created"]
    assert r.hgetall(ML) == {b"id": b"ml_1", b"status": b"queued", b"fingerprint": b"fp"} and 0 < r.ttl(ML) <= 3600
    assert r.zscore(keys.MAILINGS_DUE, "ml_1") == 1000 and r.zrange(keys.MAILINGS_INDEX, 0, -1) == [b"ml_kept", b"ml_1"]
    assert _create(r, {"id": "ml_1", "status": "failed", "fingerprint": "other"}) == [b"existing", b"fp", b"queued"]
    assert r.hget(ML, "fingerprint") == b"fp"
    cool = keys.mailing_cooldown("t", "rcpt")
    assert _create(r, mid="ml_2", marker=cool, cooldown=60) == [b"created"] and r.get(cool) == b"ml_2"
    assert _create(r, mid="ml_3", marker=cool, cooldown=60) == [b"cooldown", b"ml_2"] and not r.exists(
        keys.mailing("ml_3"))
    assert _create(r, {"id": "ml_4", "status": "failed"}, mid="ml_4", queued="0") == [b"created"]
    assert r.zscore(keys.MAILINGS_DUE, "ml_4") is None and r.zscore(keys.MAILINGS_INDEX, "ml_4") == 1000


def _reserve(r, cap=2, trigger_cap=1, trigger="1", mid="ml_1"):
    return lua("mailing_reserve")(r, keys=[keys.mailing(mid), keys.mailing_cap("2024-05-06"),
                                           keys.mailing_cap("2024-05-06", "t")],
                                  args=[cap, trigger_cap, "2024-05-06", 172800, trigger])


def test_mailing_reserve_counts_a_mailing_once_against_both_caps(redis_client):
    r = redis_client
    day, trig = keys.mailing_cap("2024-05-06"), keys.mailing_cap("2024-05-06", "t")
    assert _reserve(r) == b"ok" and _reserve(r) == b"ok"  # a retry reuses its slot
    assert r.get(day) == b"1" and r.get(trig) == b"1" and r.hget(ML, "cap_day") == b"2024-05-06"
    assert 0 < r.ttl(day) <= 172800 and 0 < r.ttl(trig) <= 172800
    assert _reserve(r, mid="ml_2") == b"trigger_max_per_day" and r.get(day) == b"1"
    assert _reserve(r, mid="ml_2", trigger="0") == b"ok" and r.get(day) == b"2" and r.get(trig) == b"1"
    assert _reserve(r, mid="ml_3", trigger="0") == b"max_per_day"
    assert _reserve(r, mid="ml_4", cap=0, trigger_cap=0) == b"ok" and r.get(day) == b"3"  # 0: no limit


def test_mailing_release_gives_a_slot_back_once(redis_client):
    r = redis_client
    day, trig = keys.mailing_cap("2024-05-06"), keys.mailing_cap("2024-05-06", "t")
    release = lua("mailing_release")
    assert release(r, keys=[ML, day, trig], args=["1"]) == 0  # it held none
    _reserve(r)
    assert release(r, keys=[ML, day, trig], args=["1"]) == 1
    assert r.get(day) == b"0" and r.get(trig) == b"0" and not r.hexists(ML, "cap_day")
    assert release(r, keys=[ML, day, trig], args=["1"]) == 0
    r.hset(ML, "cap_day", "2024-05-06")  # counters gone (expired): never below zero
    r.delete(day, trig)
    assert release(r, keys=[ML, day, trig], args=["1"]) == 1 and not r.exists(day, trig)


def test_mailing_update_changes_only_a_queued_mailing(redis_client):
    r, update = redis_client, lua("mailing_update")
    _create(r)
    assert update(r, keys=[ML, keys.MAILINGS_DUE], args=["ml_1", '{"attempts": "1"}', 2000]) == 1  # a retry
    assert r.zscore(keys.MAILINGS_DUE, "ml_1") == 2000 and r.hget(ML, "attempts") == b"1"
    assert update(r, keys=[ML, keys.MAILINGS_DUE], args=["ml_1", '{"status": "mailed"}', ""]) == 1
    assert r.zscore(keys.MAILINGS_DUE, "ml_1") is None and r.hget(ML, "status") == b"mailed"
    r.zadd(keys.MAILINGS_DUE, {"ml_1": 5})  # a stale claim: the outcome stays, it leaves the due set
    assert update(r, keys=[ML, keys.MAILINGS_DUE], args=["ml_1", '{"status": "failed"}', ""]) == 0
    assert r.hget(ML, "status") == b"mailed" and r.zscore(keys.MAILINGS_DUE, "ml_1") is None
