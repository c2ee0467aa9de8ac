"""The console's JSON API as a client sees it, against a real receiver, worker and loopback destination."""

from __future__ import annotations

import csv
import io
import json

from tests.console.conftest import CRM_SECRET, OPERATE_TOKEN, READ_TOKEN, Console, piece_event
from tests.receiver.harness import assert_error
from tests.support.processes import wait_for


def journey(piece: str, last: str = "delivered", **kw) -> list:
    steps = [("created", 0), ("mailed", 1), ("in_transit", 2), ("processed_for_delivery", 4.5), ("delivered", 5)]
    out = []
    for etype, days in steps:
        out.append(piece_event(piece, etype, days, **kw))
        if etype == last:
            break
    return out


def test_search_filters_paging_and_errors(console: Console) -> None:
    console.feed(*journey("ltr_a", name="Ada Lovelace", email="Ada@Example.com"),
                 *journey("ltr_b", "mailed", name="Bob Stone", email="bob@example.com"),
                 *journey("ltr_c", "processed_for_delivery", campaign="fall", name="Cleo Ada"),
                 *journey("ltr_d", "in_transit", source="postgrid", name="Dan"),
                 *journey("ltr_e", "created", name="Eve"))
    console.settled()

    def ids(**params) -> list[str]:
        resp = console.api("GET", "/v1/mailpieces", params=params)
        assert resp.status_code == 200, resp.text
        return [p["id"] for p in resp.json()["mailpieces"]]

    assert ids(email="ADA@example.com ") == ["ltr_a"]
    assert ids(q="ada@example.com") == ["ltr_a"]
    assert sorted(ids(q="ada")) == ["ltr_a", "ltr_c"]          # name words
    assert ids(q="ada lovelace") == ["ltr_a"]                   # every word must match
    assert ids(q="ltr_d") == ["ltr_d"]                          # a provider id, whatever the source
    assert ids(campaign="fall") == ["ltr_c"]
    assert ids(stage="mailed") == ["ltr_b"]
    assert ids(source="postgrid") == ["ltr_d"]
    assert ids(campaign="spring", stage="delivered") == ["ltr_a"]
    assert ids(q="nobody") == []
    # newest first (by first event), then a cursor per page until the end
    first = console.api("GET", "/v1/mailpieces", params={"limit": 2}).json()
    seen, cursor = [p["id"] for p in first["mailpieces"]], first["next_cursor"]
    while cursor:
        nxt = console.api("GET", "/v1/mailpieces", params={"limit": 2, "cursor": cursor}).json()
        seen += [p["id"] for p in nxt["mailpieces"]]
        cursor = nxt["next_cursor"]
    assert sorted(seen) == ["ltr_a", "ltr_b", "ltr_c", "ltr_d", "ltr_e"] and len(seen) == 5
    row = next(p for p in first["mailpieces"])
    assert set(row) == {"source", "id", "kind", "country", "stage", "stage_at", "campaign", "name", "email",
                        "first_event_at"}
    assert_error(console.api("GET", "/v1/mailpieces", params={"cursor": "not-a-cursor"}), 400, "invalid_query")
    assert_error(console.api("GET", "/v1/mailpieces", params={"stage": "lost"}), 400, "invalid_query")
    assert_error(console.api("GET", "/v1/mailpieces", params={"since": "last tuesday"}), 400, "invalid_query")
    assert_error(console.api("GET", "/v1/mailpieces", params={"limit": "0"}), 400, "invalid_query")
    assert_error(console.svc.http.get("/v1/mailpieces"), 401, "missing_token")
    assert ids(since="2026-11-02") and not ids(since="2026-12-01")


def test_campaign_funnel_and_csv(console: Console) -> None:
    console.feed(*journey("p1"), *journey("p2", "processed_for_delivery"),
                 piece_event("p3", "mailed", 1), piece_event("p3", "returned_to_sender", 9),
                 piece_event("p1", "purl_opened", 6), piece_event("p1", "purl_opened", 7, sid="second-visit"),
                 piece_event("p4", "mailed", 1, name="=HYPERLINK(\"http://evil\")"))
    console.settled()
    resp = console.api("GET", "/v1/campaigns")
    assert resp.status_code == 200
    assert resp.json()["campaigns"][0] | {"last_event_at": None} == {
        "id": "spring", "pieces": 4, "mailed": 4, "delivered": 1, "returned": 1, "last_event_at": None}
    c = console.api("GET", "/v1/campaigns/spring").json()
    assert c["funnel"] == {"created": 4, "addressed": 4, "printed": 4, "mailed": 4, "in_transit": 2,
                           "in_local_area": 2, "processed_for_delivery": 2, "delivered": 1}
    assert c["outcomes"]["returned_to_sender"] == 1 and c["engagement"] == {"purl_opened": 1, "purl_completed": 0}
    assert c["rates"]["returned"] == 0.25 and c["rates"]["visited"] == 0.25
    assert c["median_days_mailed_to_processed"] == 3.5
    assert c["arrivals"]["returned_to_sender"] == {"2026-11-11": 1}
    assert_error(console.api("GET", "/v1/campaigns/nope"), 404, "campaign_not_found")
    resp = console.api("GET", "/v1/campaigns/spring/mailpieces.csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert sorted(r["id"] for r in rows) == ["p1", "p2", "p3", "p4"]
    assert next(r for r in rows if r["id"] == "p4")["name"].startswith("'=")  # never a live formula


def test_dead_letter_replayed_through_the_api_reaches_the_destination(console: Console) -> None:
    console.crm.failing = True
    console.feed(piece_event("ltr_dead", "mailed", 1))
    console.settled()
    dead = console.api("GET", "/v1/dlq").json()["dead_letters"]
    assert [d["destination"] for d in dead] == ["crm"] and "contact locked" in dead[0]["attempts"][0]["detail"]
    assert CRM_SECRET not in console.api("GET", "/v1/dlq").text
    assert console.api("GET", "/v1/deliveries", params={"status": "dead"}).json()["deliveries"][0]["key"] == dead[0]["key"]
    key = dead[0]["key"]
    assert_error(console.api("POST", f"/v1/dlq/{key}/replay"), 403, "forbidden")  # a read token only looks
    console.crm.failing = False
    resp = console.api("POST", f"/v1/dlq/{key}/replay", token=OPERATE_TOKEN)
    assert resp.status_code == 200 and resp.json() == {"replayed": 1, "skipped_done": 0, "not_found": []}
    assert wait_for(lambda: len(console.crm.received()) == 2, 30)
    console.settled()
    assert console.api("GET", "/v1/dlq").json()["dead_letters"] == []
    assert_error(console.api("POST", f"/v1/dlq/{key}/replay", token=OPERATE_TOKEN), 404, "dead_letter_not_found")
    piece = console.api("GET", "/v1/mailpieces/lob/ltr_dead").json()
    assert [(d["destination"], d["state"]) for d in piece["deliveries"]] == [("crm", "done")]
    assert_error(console.api("POST", "/v1/dlq/replay", token=OPERATE_TOKEN, json={}), 400, "invalid_body")
    assert_error(console.api("POST", "/v1/dlq/replay", token=OPERATE_TOKEN, content=b"{"), 400, "invalid_json")
    assert console.api("POST", "/v1/dlq/replay", token=OPERATE_TOKEN, json={"ids": ["crm|nope"]}).json() == {
        "replayed": 0, "skipped_done": 0, "not_found": ["crm|nope"]}


def test_pause_parks_deliveries_and_resume_delivers_them(console: Console) -> None:
    assert_error(console.api("POST", "/v1/destinations/crm/pause"), 403, "forbidden")
    assert_error(console.api("POST", "/v1/destinations/nope/pause", token=OPERATE_TOKEN), 404,
                 "destination_not_found")
    assert console.api("POST", "/v1/destinations/crm/pause", token=OPERATE_TOKEN).json() == {
        "destination": "crm", "paused": True}
    console.feed(piece_event("ltr_p", "mailed", 1))
    assert wait_for(lambda: console.redis.llen("pr:dest:{crm}:parked") == 1, 30), console.worker.log()[-2000:]
    assert console.crm.received() == []
    resp = console.api("POST", "/v1/destinations/crm/resume", token=OPERATE_TOKEN)
    assert resp.json() == {"destination": "crm", "paused": False, "requeued": 1}
    assert wait_for(lambda: len(console.crm.received()) == 1, 30)


def test_followups_listed_by_rule_and_cancelled(console: Console) -> None:
    console.feed(*journey("f1", "processed_for_delivery"), *journey("f2", "processed_for_delivery"))
    console.settled()
    items = console.api("GET", "/v1/followups", params={"rule": "nudge"}).json()["followups"]
    assert sorted(i["mailpiece"]["id"] for i in items) == ["f1", "f2"]
    assert console.api("GET", "/v1/followups", params={"rule": "other"}).json()["followups"] == []
    fid = next(i["id"] for i in items if i["mailpiece"]["id"] == "f1")
    assert_error(console.api("DELETE", f"/v1/followups/{fid}"), 403, "forbidden")
    assert console.api("DELETE", f"/v1/followups/{fid}", token=OPERATE_TOKEN).json() == {"cancelled": fid}
    assert_error(console.api("DELETE", f"/v1/followups/{fid}", token=OPERATE_TOKEN), 404, "followup_not_found")
    left = console.api("GET", "/v1/followups", params={"token": READ_TOKEN}).json()["followups"]
    assert [i["mailpiece"]["id"] for i in left] == ["f2"]
    f2 = console.api("GET", "/v1/mailpieces/lob/f2").json()["followups"]
    assert [(f["rule"], f["state"]) for f in f2] == [("nudge", "pending")]
    f1 = console.api("GET", "/v1/mailpieces/lob/f1").json()["followups"]
    assert [(f["rule"], f["state"]) for f in f1] == [("nudge", "cancelled")] and f1[0]["at"]
    assert json.loads(console.redis.get(f"pr:fu:cancelled:{{{fid}}}"))["by"] == "ops"
