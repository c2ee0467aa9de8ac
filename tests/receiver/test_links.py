"""Tracking links over real HTTP: minting, the /t/ redirect and its event, collapsing, not-humans, expiry,
revocation, unknown tokens, goals and open-redirect attempts."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postrelay.core import keys
from tests.receiver.harness import Service, assert_canonical_shape, assert_error
from tests.receiver.links_support import (
    AUTH,
    BASE_URL,
    BROWSER,
    apply_visits,
    link_record,
    links_service,
    metric,
    mint,
    visit,
    visits_in_stream,
)

__all__ = ["links_service"]


def test_mint_answers_token_urls_and_stores_the_target_with_utm(links_service: Service) -> None:
    svc = links_service
    made = mint(svc, target_url="https://shop.example.com/offer?x=1", campaign_id="spring", ref="crm-42",
                utm={"source": "postcard", "campaign": "spring"}, query={"code": "SAVE10"})
    assert set(made) == {"token", "url", "qr_svg_url", "qr_png_url"}
    token = made["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", token)  # 16 base64url characters = 96 random bits
    assert made["url"] == f"{BASE_URL}/t/{token}"
    assert made["qr_svg_url"] == f"{BASE_URL}/v1/links/{token}/qr.svg"
    assert made["qr_png_url"] == f"{BASE_URL}/v1/links/{token}/qr.png"
    assert mint(svc)["token"] != token
    shown = svc.http.get(f"/v1/links/{token}", headers=AUTH).json()
    target = urlsplit(shown["target_url"])
    assert (target.scheme, target.netloc, target.path) == ("https", "shop.example.com", "/offer")
    assert parse_qs(target.query) == {"x": ["1"], "utm_source": ["postcard"], "utm_campaign": ["spring"],
                                      "code": ["SAVE10"]}
    assert shown["status"] == "active" and shown["campaign_id"] == "spring" and shown["ref"] == "crm-42"
    assert shown["mailpiece"] is None and shown["goal"] == "pixel"


def test_mint_needs_an_operate_token(links_service: Service) -> None:
    resp = links_service.http.post("/v1/links", json={"target_url": "https://shop.example.com/"})
    assert_error(resp, 401, "missing_token")


def test_visit_redirects_and_records_one_purl_opened_event(links_service: Service) -> None:
    svc = links_service
    made = mint(svc, campaign_id="spring", ref="crm-42")
    resp = visit(svc, made["token"])
    assert resp.status_code == 302
    assert resp.headers["location"] == "https://shop.example.com/offer"
    assert resp.headers["cache-control"] == "no-store"
    [queued] = visits_in_stream(svc)
    assert_canonical_shape(queued)
    assert queued["type"] == "purl_opened" and queued["source"] == "links"
    assert queued["metadata"]["postrelay_link"] == made["token"]
    assert "127.0.0.1" not in svc.redis.xrange(keys.INGEST_STREAM)[0][1][b"e"].decode()  # no raw address
    apply_visits(svc)  # the worker completes the event from the link
    [event] = svc.get_piece("links", made["token"]).json()["events"]
    assert event["id"] == queued["id"] and event["mailpiece"]["campaign_id"] == "spring"
    assert event["metadata"]["ref"] == "crm-42" and event["mailpiece"]["id"] == made["token"]
    assert metric(svc, "postrelay_link_visits_total", kind="open", outcome="recorded") == 1


def test_repeats_within_the_window_collapse(links_service: Service) -> None:
    svc = links_service
    token = mint(svc)["token"]
    for _ in range(3):
        assert visit(svc, token).status_code == 302
    assert len(visits_in_stream(svc)) == 1
    assert visit(svc, token, agent=BROWSER + " other-device").status_code == 302  # another client
    assert len(visits_in_stream(svc)) == 2
    svc.clock.advance(29 * 60)  # the test clock does not move Redis TTLs: expire the marker as Redis would
    assert visit(svc, token).status_code == 302
    assert len(visits_in_stream(svc)) == 2
    for key in svc.redis.scan_iter(match=keys.seen("lnk:*")):
        svc.redis.delete(key)
    assert visit(svc, token).status_code == 302
    assert len(visits_in_stream(svc)) == 3
    assert metric(svc, "postrelay_link_visits_total", kind="open", outcome="collapsed") == 3
    ttl = max(svc.redis.ttl(k) for k in svc.redis.scan_iter(match=keys.seen("lnk:*")))
    assert 1700 < ttl <= 1800


def test_collapse_window_zero_counts_every_visit(make_service) -> None:
    from tests.receiver.links_support import LINKS

    svc = make_service({"links": {**LINKS, "collapse_window": 0}})
    token = mint(svc)["token"]
    for _ in range(3):
        assert visit(svc, token).status_code == 302
    assert len(visits_in_stream(svc)) == 3


@pytest.mark.parametrize(("how", "reason"), [
    ({"method": "HEAD"}, "head"),
    ({"headers": {"Sec-Purpose": "prefetch;prerender"}}, "prefetch"),
    ({"headers": {"Purpose": "prefetch"}}, "prefetch"),
    ({"headers": {"X-Purpose": "preview"}}, "prefetch"),
    ({"agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"}, "scanner"),
    ({"agent": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"}, "scanner"),
    ({"agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, "scanner"),
    ({"agent": "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"}, "scanner"),
    ({"agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36"}, "scanner"),
    ({"agent": "Mozilla/5.0 (compatible; BingPreview/1.0b)"}, "scanner"),
])
def test_not_humans_are_redirected_without_an_event(links_service: Service, how: dict, reason: str) -> None:
    svc = links_service
    token = mint(svc)["token"]
    resp = visit(svc, token, **how)
    assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example.com/offer"
    assert visits_in_stream(svc) == []
    assert metric(svc, "postrelay_link_non_human_total", kind="open", reason=reason) == 1
    assert metric(svc, "postrelay_link_visits_total", kind="open", outcome="recorded") == 0
    assert visit(svc, token).status_code == 302  # the person's visit afterwards is still recorded
    assert len(visits_in_stream(svc)) == 1


def test_a_phone_named_like_a_bot_is_a_person(links_service: Service) -> None:
    token = mint(links_service)["token"]
    agent = "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36"
    assert visit(links_service, token, agent=agent).status_code == 302
    assert len(visits_in_stream(links_service)) == 1


def test_expired_link_shows_a_small_page_and_records_nothing(links_service: Service) -> None:
    svc = links_service
    token = mint(svc, expires_at="2026-12-01T00:00:00Z")["token"]
    assert visit(svc, token).status_code == 302
    svc.clock.now = 1_796_083_200  # 2026-12-01T00:00:00Z
    svc.clock.advance(10)  # past the cache TTL too
    resp = visit(svc, token)
    assert resp.status_code == 410
    assert resp.headers["content-type"].startswith("text/html") and "expired" in resp.text
    assert "location" not in resp.headers and "Traceback" not in resp.text
    json_resp = svc.http.get(f"/t/{token}", headers={"User-Agent": BROWSER, "Accept": "application/json"})
    assert_error(json_resp, 410, "link_gone")
    assert len(visits_in_stream(svc)) == 1
    assert svc.http.get(f"/v1/links/{token}", headers=AUTH).json()["status"] == "expired"


def test_revoked_link_redirects_to_the_fallback_when_configured(make_service) -> None:
    from tests.receiver.links_support import LINKS

    svc = make_service({"links": {**LINKS, "fallback_url": "https://shop.example.com/expired"}})
    token = mint(svc)["token"]
    assert visit(svc, token).status_code == 302
    revoked = svc.http.delete(f"/v1/links/{token}", headers=AUTH)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    resp = visit(svc, token)
    assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example.com/expired"
    assert len(visits_in_stream(svc)) == 1
    assert metric(svc, "postrelay_link_visits_total", kind="open", outcome="gone") == 1


def test_revoked_link_without_fallback_shows_the_page(links_service: Service) -> None:
    svc = links_service
    token = mint(svc)["token"]
    assert svc.http.delete(f"/v1/links/{token}", headers=AUTH).status_code == 200
    resp = visit(svc, token)
    assert resp.status_code == 410 and "withdrawn" in resp.text


def test_unknown_tokens_get_one_404_whatever_they_are(links_service: Service) -> None:
    svc = links_service
    gone = mint(svc)["token"]
    svc.redis.delete(keys.link(gone))  # existed once, purged since
    answers = [visit(svc, t) for t in ("AAAAAAAAAAAAAAAAAAAAAA", gone, "short", "has.dot.in.it.xxxxx", "x" * 200)]
    assert {r.status_code for r in answers} == {404}
    assert len({r.text for r in answers}) == 1
    assert len({tuple(sorted((k, v) for k, v in r.headers.items() if k != "date")) for r in answers}) == 1
    json_resp = svc.http.get("/t/AAAAAAAAAAAAAAAAAAAAAA", headers={"Accept": "application/json"})
    assert_error(json_resp, 404, "not_found")
    assert visits_in_stream(svc) == []


@pytest.mark.parametrize("target", [
    "//evil.example/path",
    "https:%2F%2Fevil.example",
    "https:/evil.example",
    "https:///evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://shop.example.com/file",
    "https://shop.example.com@evil.example/",
    "https://shop.example.com:443@evil.example/",
    "https://user:pass@shop.example.com/",
    "https://evil.example/?next=https://shop.example.com",
    "https://shop.example.com.evil.example/",
    "https://evilshop.example.com/",
    "https://shop.example.com\\@evil.example/",
    "https://shop.example.com\\.evil.example/",
    "https://shop.example.com%2F@evil.example/",
    "https://sh\u0441p.example.com/",  # a Cyrillic letter es
    "https://shop.example.com\r\nLocation: https://evil.example/",
    "https://example.org/",  # *.example.org allows subdomains, not the domain itself
    "",
    "shop.example.com/offer",
])
def test_open_redirect_targets_are_refused_at_minting(links_service: Service, target: str) -> None:
    resp = links_service.http.post("/v1/links", json={"target_url": target}, headers=AUTH)
    body = assert_error(resp, 400, "invalid_link")
    assert body["detail"].startswith("target_url")


@pytest.mark.parametrize("target", ["HTTPS://SHOP.EXAMPLE.COM/Offer", "https://a.b.example.org/x",
                                    "http://shop.example.com:8080/"])
def test_allowed_spellings_are_normalized(links_service: Service, target: str) -> None:
    token = mint(links_service, target_url=target)["token"]
    location = visit(links_service, token).headers["location"]
    parts = urlsplit(location)
    assert parts.scheme in ("http", "https") and parts.hostname in ("shop.example.com", "a.b.example.org")
    assert location.startswith(parts.scheme + "://" + parts.netloc.lower())


@pytest.mark.parametrize("path", ["/t/%2F%2Fevil.example", "/t//evil.example", "/t/%2Fevil.example%2F",
                                  "/t/https:%2F%2Fevil.example", "/t/..%2F..%2Fevil", "/t/"])
def test_visit_paths_never_redirect_elsewhere(links_service: Service, path: str) -> None:
    resp = links_service.http.get(path, headers={"User-Agent": BROWSER, "Accept": "text/html"})
    assert resp.status_code == 404 and "location" not in resp.headers


def test_goal_pixel_redirect_and_server_to_server(links_service: Service) -> None:
    svc = links_service
    pixel_link = mint(svc)["token"]
    resp = visit(svc, pixel_link, goal=True)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/gif"
    assert resp.content.startswith(b"GIF89a")
    redirect_link = mint(svc, goal_url="https://shop.example.com/thanks")["token"]
    resp = visit(svc, redirect_link, goal=True)
    assert resp.status_code == 302 and resp.headers["location"] == "https://shop.example.com/thanks"
    assert [e["type"] for e in visits_in_stream(svc)] == ["purl_completed", "purl_completed"]
    first = svc.http.post(f"/v1/links/{pixel_link}/goal", json={"id": "order-1001", "metadata": {"value": 49}},
                          headers=AUTH)
    assert first.status_code == 200 and first.json() == {"accepted": 1, "duplicates": 0}
    again = svc.http.post(f"/v1/links/{pixel_link}/goal", json={"id": "order-1001"}, headers=AUTH)
    assert again.json() == {"accepted": 0, "duplicates": 1}
    events = visits_in_stream(svc)
    assert len(events) == 3 and events[-1]["metadata"]["postrelay"]["goal"] == {"value": 49}
    assert_error(svc.http.post("/v1/links/AAAAAAAAAAAAAAAAAAAAAA/goal", headers=AUTH), 404, "link_not_found")
    assert_error(svc.http.post(f"/v1/links/{pixel_link}/goal", content=b"[1]", headers=AUTH), 400, "invalid_goal")
    assert_error(svc.http.post(f"/v1/links/{pixel_link}/goal"), 401, "missing_token")


def test_bad_specs_name_the_field(links_service: Service) -> None:
    svc = links_service
    cases = [({"target_url": "https://shop.example.com/", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
             ({"target_url": "https://shop.example.com/", "utm": {"color": "red"}}, "utm"),
             ({"target_url": "https://shop.example.com/", "goal_url": "https://evil.example/"}, "goal_url"),
             ({"target_url": "https://shop.example.com/", "mailpiece": {"id": "x"}}, "mailpiece.source"),
             ({"target_url": "https://shop.example.com/", "surprise": 1}, "surprise"),
             ({}, "target_url")]
    for spec, field in cases:
        body = assert_error(svc.http.post("/v1/links", json=spec, headers=AUTH), 400, "invalid_link")
        assert body["detail"].startswith(field), body
    assert_error(svc.http.post("/v1/links", content=b"{nope", headers=AUTH), 400, "invalid_json")


def test_batch_mints_in_order_all_or_nothing(links_service: Service) -> None:
    svc = links_service
    items = [{"target_url": f"https://shop.example.com/p/{i}", "ref": f"c{i}"} for i in range(250)]
    resp = svc.http.post("/v1/links/batch", json={"links": items}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    made = resp.json()["links"]
    assert len(made) == 250 and len({m["token"] for m in made}) == 250
    assert link_record(svc, made[7]["token"])["target"] == "https://shop.example.com/p/7"
    bad = [*items[:3], {"target_url": "https://evil.example/"}]
    before = len(list(svc.redis.scan_iter(match="pr:link:{*}")))
    body = assert_error(svc.http.post("/v1/links/batch", json={"links": bad}, headers=AUTH), 400, "invalid_link")
    assert body["detail"].startswith("links[3].target_url")
    assert len(list(svc.redis.scan_iter(match="pr:link:{*}"))) == before
    too_many = {"links": [{"target_url": "https://shop.example.com/"}] * 10_001}
    assert_error(svc.http.post("/v1/links/batch", json=too_many, headers=AUTH), 400, "too_many_links")


def test_links_not_configured(service: Service) -> None:
    resp = service.http.post("/v1/links", json={"target_url": "https://shop.example.com/"}, headers=AUTH)
    assert_error(resp, 404, "links_not_configured")


def _scanner_by_regex_words(agent: str) -> bool:
    """The scanner test as first written (a regex word split of the lower-cased text): the reference."""
    from postrelay.receiver.linkbots import load_scanners

    low = agent.lower()
    words = set(re.findall(r"[a-z0-9]+", low))
    return any(entry.lower() in low for entry in load_scanners()
               if (first := re.search(r"[a-z0-9]+", entry.lower())) and first.group(0) in words)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["Slackbot", "ms-office", "MS Office", "googlebot", "Google", "check",
                                           "Mozilla/5.0", "(compatible;", " ", "/", "-", "é", "\u00c9", "\u00ff",
                                           "HeadlessChrome", "x"]),
                          st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=8)), max_size=8))
def test_the_scanner_check_matches_the_reference_on_any_latin1_agent(parts: list[str]) -> None:
    from postrelay.receiver.linkbots import is_scanner

    agent = "".join(parts)
    assert is_scanner.__wrapped__(agent) == _scanner_by_regex_words(agent)  # type: ignore[attr-defined]
