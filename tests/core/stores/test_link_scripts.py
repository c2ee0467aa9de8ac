"""The tracking-link Lua scripts, each called directly against a real Redis."""

from __future__ import annotations

import json

from postrelay.core import keys
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.scripts import lua
from postrelay.core.stores import links as store
from postrelay.core.stores.link_binding import bind_args

CONFIG = LinksConfig(base_url="https://go.example.test", allowed_hosts=["shop.example.com", "*.example.org"])
NOW = 1_780_000_000.0


def _mint(r, **spec) -> str:
    spec.setdefault("target_url", "https://shop.example.com/")
    return store.mint(r, CONFIG, NOW, **spec)["token"]


def test_every_link_script_names_its_slots():
    for name in ("link_visit", "link_bind", "link_revoke", "ingest_visit", "ingest_enqueue"):
        script = lua(name)
        used, named = script.used(), script.header()
        assert used["KEYS"] <= named["KEYS"] and used["ARGV"] <= named["ARGV"], name


def test_link_visit_holds_for_unbound_and_returns_the_record(redis_client):
    token = _mint(redis_client, ref="r")
    raw = lua("link_visit")(redis_client, keys=[keys.link(token), keys.link_held(token)], args=[5, '{"v":1}'])
    assert json.loads(raw)["ref"] == "r"
    assert redis_client.zrange(keys.link_held(token), 0, -1, withscores=True) == [(b'{"v":1}', 5.0)]
    held_ttl, link_ttl = redis_client.pttl(keys.link_held(token)), redis_client.pttl(keys.link(token))
    assert held_ttl > 0 and abs(held_ttl - link_ttl) < 1000  # the held visits live as long as their link
    assert lua("link_visit")(redis_client, keys=[keys.link("nope"), keys.link_held("nope")], args=[1, "{}"]) is None
    bound = _mint(redis_client, mailpiece={"source": "lob", "id": "ltr_1"})
    lua("link_visit")(redis_client, keys=[keys.link(bound), keys.link_held(bound)], args=[5, "{}"])
    assert redis_client.exists(keys.link_held(bound)) == 0


def test_link_bind_by_token_and_ref_first_piece_wins(redis_client):
    a, b = _mint(redis_client, ref="r1", campaign_id="spring"), _mint(redis_client, ref="r1", campaign_id="autumn")
    redis_client.zadd(keys.link_held(a), {'{"held":1}': 1})
    out = lua("link_bind")(redis_client, keys=[keys.link_ref("r1")],
                           args=bind_args("", "r1", "lob", "ltr_9", "letter", "US", "spring", '{"email":"a@x"}', "{}",
                                          NOW, "mev_1"))
    assert out == [a.encode(), 1, b'{"held":1}']  # the autumn link keeps waiting for its own piece
    link = store.read(redis_client, a)
    assert (link.piece_source, link.piece_id, link.piece_kind, link.recipient) == ("lob", "ltr_9", "letter",
                                                                                  {"email": "a@x"})
    assert redis_client.smembers(keys.link_ref("r1")) == {b.encode()}
    again = lua("link_bind")(redis_client, keys=[keys.link_ref("")],
                             args=bind_args(a, "", "lob", "ltr_9", "", "", "", "{}", "{}", NOW, "mev_1"))
    assert again == [a.encode(), 1, b'{"held":1}']  # the same binding event, run again, gets them again
    other = lua("link_bind")(redis_client, keys=[keys.link_ref("")],
                             args=bind_args(a, "", "lob", "ltr_2", "", "", "", "{}", "{}", NOW, "mev_2"))
    assert other == [] and store.read(redis_client, a).piece_id == "ltr_9"


def test_link_revoke_keeps_the_first_time(redis_client):
    token = _mint(redis_client)
    first = json.loads(lua("link_revoke")(redis_client, keys=[keys.link(token)], args=[NOW + 5]))
    second = json.loads(lua("link_revoke")(redis_client, keys=[keys.link(token)], args=[NOW + 9]))
    assert first["revoked"] == second["revoked"] == NOW + 5
    assert redis_client.ttl(keys.link(token)) > 0
    assert lua("link_revoke")(redis_client, keys=[keys.link("nope")], args=[NOW]) is None


def test_ingest_visit_queues_only_active_links(redis_client):
    ok, expiring = _mint(redis_client), _mint(redis_client, expires_at="2026-05-29T00:00:00Z")
    revoked = _mint(redis_client)
    lua("link_revoke")(redis_client, keys=[keys.link(revoked)], args=[NOW])
    elsewhere = _mint(redis_client, target_url="https://a.example.org/")
    hosts = json.dumps(["shop.example.com"])  # example.org removed from the config since
    tokens = [ok, ok, expiring, revoked, elsewhere, "missing"]
    markers = [keys.seen(f"m{i}") for i in (0, 0, 2, 3, 4, 5)]
    visits = "\n".join(f"{keys.link(t)}\t{m}\t60\t{json.dumps({'visit': i, 'text': 'a b'})}"
                       for i, (t, m) in enumerate(zip(tokens, markers, strict=True)))
    out = lua("ingest_visit")(redis_client, keys=[keys.INGEST_STREAM], args=[NOW + 2 * 86400, hosts, visits])
    lines = out.split(b"\n")  # one line per visit: flag, tab, the record ('' when none)
    assert [line[:2] for line in lines] == [b"1\t", b"0\t", b"g\t", b"g\t", b"g\t", b"x\t"]
    assert lines[-1] == b"x\t" and json.loads(lines[0][2:])["target"] == "https://shop.example.com/"
    assert json.loads(lines[2][2:])["expires"] is not None  # a gone link's record comes back too
    entries = redis_client.xrange(keys.INGEST_STREAM)
    assert [json.loads(fields[b"e"]) for _, fields in entries] == [{"visit": 0, "text": "a b"}]
    assert 0 < redis_client.ttl(markers[0]) <= 60 and not redis_client.exists(markers[2])
