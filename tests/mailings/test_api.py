"""POST /v1/mailings -> a worker creates the piece through PostGrid or Lob; GET shows how it went."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.mailings.conftest import ADA, LOB_KEY, PG_KEY, READ_TOKEN, SENDER, Env, mailing
from tests.receiver.harness import assert_error
from tests.support.http_server import Reply

CASES = [("pg", "postcard"), ("pg", "letter"), ("lob", "postcard"), ("lob", "letter")]


@pytest.mark.parametrize(("provider", "kind"), CASES)
def test_mailing_is_queued_then_created_with_the_providers_documented_request(env: Env, provider: str,
                                                                              kind: str) -> None:
    resp = env.post_mailing(mailing(provider, kind), key="order-1001")
    assert resp.status_code == 202, resp.text
    mid = resp.json()["mailing_id"]
    assert resp.json() == {"mailing_id": mid, "status": "queued"}
    assert env.get_mailing(mid).json()["status"] == "queued"

    assert env.work() == 1

    stand_in = env.postgrid if provider == "pg" else env.lob
    assert stand_in.violations == []
    assert len(stand_in.pieces) == 1
    create = next(r for r in stand_in.requests if r.method == "POST")
    assert create.headers["idempotency-key"] == mid
    body = create.json()
    piece = stand_in.pieces[0]
    view = env.get_mailing(mid).json()
    assert view["status"] == "created"
    assert view["piece_id"] == piece["id"]
    assert view["provider_type"] == ("postgrid" if provider == "pg" else "lob")
    assert view["reason"] is None and view["stage"] is None
    # correlation by construction: postrelay's key and the caller's CRM keys travel in the provider metadata
    assert body["metadata"] == {"hubspot_contact_id": "901", "deal_id": "D-17", "campaign_id": "winback",
                                "postrelay_mailing": mid}
    if provider == "pg":
        assert create.path == f"/print-mail/v1/{kind}s"
        assert create.headers["x-api-key"] == PG_KEY
        assert body["to"] == {"firstName": "Ada", "lastName": "Lovelace", "addressLine1": "145 Mulberry St",
                              "addressLine2": "Apt 2", "city": "New York", "provinceOrState": "NY",
                              "postalOrZip": "10013", "countryCode": "US", "email": "ada@example.com"}
        assert body["mergeVariables"] == {"discount_code": "COMEBACK10"}
        if kind == "postcard":
            assert (body["frontTemplate"], body["backTemplate"], body["size"]) == ("template_front1",
                                                                                    "template_back1", "6x4")
        else:
            assert (body["template"], body["from"]) == ("template_letter1", "contact_sender1")
    else:
        assert create.path == f"/v1/{kind}s"
        assert create.headers["authorization"].startswith("Basic ")
        assert body["to"]["address_line2"] == "Apt 2" and body["to"]["address_zip"] == "10013"
        assert body["merge_variables"] == {"discount_code": "COMEBACK10"}
        assert body["use_type"] == "marketing"
        assert body["from"]["address_line1"] == SENDER["address_line1"]
        if kind == "postcard":
            assert (body["front"], body["back"]) == ("tmpl_front1", "tmpl_back1")
        else:
            assert (body["file"], body["color"]) == ("tmpl_letter1", False)


def test_html_templates_mailing_class_and_send_date_reach_each_provider(env: Env) -> None:
    extra = {"front_template": "<h1>Hi {{to.firstName}}</h1>", "back_template": "<p>10% off</p>", "size": "9x6",
             "mailing_class": "standard_class", "send_date": "2026-12-03", "from": SENDER}
    assert env.post_mailing(mailing("pg", **extra), key="a").status_code == 202
    assert env.post_mailing(mailing("lob", **extra), key="b").status_code == 202
    assert env.work() == 2
    assert env.postgrid.violations == [] and env.lob.violations == []
    pg = next(r for r in env.postgrid.requests if r.method == "POST").json()
    assert (pg["frontHTML"], pg["size"], pg["mailingClass"], pg["sendDate"]) == (
        extra["front_template"], "9x6", "standard_class", "2026-12-03")
    assert pg["from"]["addressLine2"] == "Suite 210"
    lob = next(r for r in env.lob.requests if r.method == "POST").json()
    assert (lob["front"], lob["size"], lob["mail_type"], lob["send_date"]) == (
        extra["front_template"], "6x9", "usps_standard", "2026-12-03")


def test_same_idempotency_key_sequentially_is_one_mailing_and_one_piece(env: Env) -> None:
    first = env.post_mailing(mailing(), key="retry-me")
    again = env.post_mailing(mailing(), key="retry-me")
    assert again.status_code == 202
    assert again.json() == {"mailing_id": first.json()["mailing_id"], "status": "queued", "replayed": True}
    env.work()
    after = env.post_mailing(mailing(), key="retry-me")
    assert after.json()["status"] == "created" and after.json()["mailing_id"] == first.json()["mailing_id"]
    env.work()
    assert len(env.postgrid.pieces) == 1 and env.postgrid.creates == 1
    conflict = env.post_mailing(mailing(metadata={"hubspot_contact_id": "902"}), key="retry-me")
    assert_error(conflict, 409, "idempotency_conflict")


def test_same_idempotency_key_concurrently_is_one_piece(env: Env) -> None:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: env.post_mailing(mailing("lob"), key="storm"), range(32)))
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["mailing_id"] for r in answers}) == 1
    assert sum(1 for r in answers if not r.json().get("replayed")) == 1
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: env.work(), range(4)))
    assert len(env.lob.pieces) == 1 and env.lob.creates == 1 and env.lob.violations == []


def test_list_shows_every_mailing_newest_first_and_filters_by_status(env: Env) -> None:
    ids = [env.post_mailing(mailing(), key=f"k{i}").json()["mailing_id"] for i in range(3)]
    env.clock.advance(1)
    listing = env.svc.http.get("/v1/mailings", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert listing.status_code == 200
    assert {m["mailing_id"] for m in listing.json()["mailings"]} == set(ids)
    env.work()
    created = env.svc.http.get("/v1/mailings?status=created&limit=2",
                               headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()["mailings"]
    assert len(created) == 2 and {m["status"] for m in created} == {"created"}
    bad = env.svc.http.get("/v1/mailings?status=lost", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert_error(bad, 400, "invalid_status")


def test_list_pages_with_cursors_filters_by_provider_and_never_shows_the_key(env: Env) -> None:
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    ids = []
    for i, provider in enumerate(["pg", "lob", "pg", "pg", "lob"]):
        env.clock.advance(1)
        body = mailing(provider, merge_variables={"pasted": PG_KEY if provider == "pg" else LOB_KEY})
        ids.append(env.post_mailing(body, key=f"page-{i}").json()["mailing_id"])
    first = env.svc.http.get("/v1/mailings?limit=2", headers=auth).json()
    assert [m["mailing_id"] for m in first["mailings"]] == [ids[4], ids[3]] and first["next_cursor"]
    second = env.svc.http.get("/v1/mailings", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth).json()
    assert [m["mailing_id"] for m in second["mailings"]] == [ids[2], ids[1]]
    third = env.svc.http.get("/v1/mailings", params={"limit": 2, "cursor": second["next_cursor"]}, headers=auth)
    assert [m["mailing_id"] for m in third.json()["mailings"]] == [ids[0]] and third.json()["next_cursor"] is None
    pg = env.svc.http.get("/v1/mailings?provider=pg", headers=auth)
    assert [m["mailing_id"] for m in pg.json()["mailings"]] == [ids[3], ids[2], ids[0]]
    assert PG_KEY not in pg.text and '"pasted":"***"' in pg.text.replace(" ", "")
    assert LOB_KEY not in env.get_mailing(ids[1]).text
    assert_error(env.svc.http.get("/v1/mailings?cursor=zzz", headers=auth), 400, "invalid_cursor")


@pytest.mark.parametrize(("body", "code", "needle"), [
    ({"kind": "postcard", "to": ADA}, "invalid_mailing", "provider"),
    ({**mailing(), "to": {**ADA, "address_line1": ""}}, "invalid_mailing", "to.address_line1"),
    ({**mailing(), "to": {**ADA, "country": "USA"}}, "invalid_mailing", "to.country"),
    ({**mailing(), "kind": "self_mailer"}, "invalid_mailing", "kind"),
    ({**mailing(), "metadata": {"postrelay_mailing": "x"}}, "invalid_mailing", "reserved"),
    ({**mailing(), "metadata": {f"k{i}": "v" for i in range(20)}}, "invalid_mailing", "at most 19"),
    ({**mailing(), "surprise": 1}, "invalid_mailing", "surprise"),
    ({**mailing(), "provider": "hubspot"}, "unknown_provider", "pg"),
    (mailing("pg", "letter", template=None), "invalid_mailing", "template"),
    ({**mailing(), "link": {"target_url": "https://shop.example/c/1"}}, "links_not_configured", "[links]"),
])
def test_bad_requests_get_a_clear_400_and_store_nothing(env: Env, body: dict, code: str, needle: str) -> None:
    resp = env.post_mailing(body)
    err = assert_error(resp, 400, code)
    assert needle in err["detail"]
    assert env.redis.zcard("pr:ml:index") == 0


def test_idempotency_key_and_operate_token_are_required(env: Env) -> None:
    assert_error(env.post_mailing(mailing(), key=None), 400, "missing_idempotency_key")
    assert_error(env.post_mailing(mailing(), key="has space"), 400, "invalid_idempotency_key")
    assert_error(env.post_mailing(mailing(), token=READ_TOKEN), 403, "forbidden")
    assert_error(env.post_mailing(mailing(), token="nope-nope-nope-nope"), 401, "invalid_token")
    not_json = env.svc.http.post("/v1/mailings", content=b"{", headers={
        "Authorization": "Bearer read-api-token-0123456789abcdef", "Idempotency-Key": "x"})
    assert_error(not_json, 400, "invalid_json")
    assert_error(env.get_mailing("ml_nope"), 404, "mailing_not_found")
    assert env.redis.zcard("pr:ml:index") == 0


def test_secrets_never_appear_in_a_mailing_view(env: Env) -> None:
    env.postgrid.script.append(Reply(400, {"error": {"type": "validation_error", "message": f"bad key {PG_KEY}"}}))
    mid = env.post_mailing(mailing()).json()["mailing_id"]
    env.work()
    text = env.get_mailing(mid).text
    assert PG_KEY not in text and LOB_KEY not in text
    assert env.get_mailing(mid).json()["status"] == "failed"


def test_redis_down_answers_503_and_the_retry_with_the_same_key_is_one_mailing(env: Env, redis_server) -> None:
    try:
        redis_server.stop(kill=True)
        down = env.post_mailing(mailing(), key="outage-1")
        err = assert_error(down, 503, "redis_unavailable")
        assert down.headers["retry-after"] == "17" and "retry" in err["detail"]
        assert_error(env.get_mailing("ml_x"), 503, "redis_unavailable")
    finally:
        redis_server.start()
    first = env.post_mailing(mailing(), key="outage-1")
    again = env.post_mailing(mailing(), key="outage-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["replayed"] is True and again.json()["mailing_id"] == first.json()["mailing_id"]
    env.work()
    assert len(env.postgrid.pieces) == 1
