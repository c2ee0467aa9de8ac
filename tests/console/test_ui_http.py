"""The console over plain HTTP: sessions, cookies, CSRF, rate limits, headers, errors, prefix and switch."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import OPERATE_TOKEN, READ_TOKEN, console_config
from tests.receiver.harness import Service

SECRET_HEADER = "X-Api-Key"
SECRET_VALUE = "crm-api-key-never-shown-0123"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(svc: Service, token: str, headers: dict[str, str] | None = None) -> httpx.Client:
    client = httpx.Client(base_url=svc.url, headers=headers or {})
    form = client.get("/ui/signin")
    assert form.status_code == 200
    resp = client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": token, "next": "/ui/campaigns"})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/campaigns", resp.text
    return client


@pytest.fixture
def ui(make_service, redis_url: str) -> Service:
    data = console_config(redis_url, "http://127.0.0.1:9/unused")
    data["destinations"]["crm"]["headers"] = {SECRET_HEADER: SECRET_VALUE}
    return make_service(config_data=data)


def test_session_cookie_flags_and_security_headers(ui: Service) -> None:
    client = httpx.Client(base_url=ui.url)
    form = client.get("/ui/signin")
    assert form.headers["content-security-policy"].startswith("default-src 'none'")
    assert "script-src" not in form.headers["content-security-policy"]  # no script at all
    assert form.headers["x-frame-options"] == "DENY" and form.headers["x-content-type-options"] == "nosniff"
    resp = client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": READ_TOKEN})
    cookie = resp.headers.get_list("set-cookie")
    session = next(c for c in cookie if c.startswith("postrelay_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/ui" in session
    assert "Max-Age=28800" in session and "Secure" not in session  # plain HTTP here
    sid = session.split(";")[0].split("=", 1)[1]
    [key] = [k for k in ui.redis.keys("pr:ui:session:*")]
    assert sid not in key.decode() and 28790 < ui.redis.ttl(key) <= 28800  # only a hash of it is stored
    css = client.get("/ui/static/console.css")
    assert css.status_code == 200 and css.headers["content-security-policy"].startswith("default-src 'none'")
    # behind a TLS proxy (X-Forwarded-Proto from a trusted address) the cookie is Secure
    tls = httpx.Client(base_url=ui.url, headers={"X-Forwarded-Proto": "https"})
    form = tls.get("/ui/signin")
    pre = form.headers["set-cookie"]
    assert "Secure" in pre
    # (httpx keeps Secure cookies for https only: hand it back as the browser would over TLS)
    resp = tls.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": READ_TOKEN},
                    headers={"Cookie": pre.split(";")[0]})
    assert "Secure" in next(c for c in resp.headers.get_list("set-cookie") if c.startswith("postrelay_session="))


def test_pages_need_a_session_and_sign_out_ends_it(ui: Service) -> None:
    anon = httpx.Client(base_url=ui.url)
    resp = anon.get("/ui/mailpieces?q=x")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/signin?next=")
    client = sign_in(ui, READ_TOKEN)
    page = client.get("/ui/")
    assert page.status_code == 200 and "Overview" in page.text
    stolen = dict(client.cookies)
    assert client.post("/ui/signout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert ui.redis.keys("pr:ui:session:*") == []
    again = httpx.Client(base_url=ui.url, cookies=stolen).get("/ui/")
    assert again.status_code == 303  # the old cookie is worth nothing


def test_sign_in_form_needs_its_csrf_cookie_and_next_stays_on_the_console(ui: Service) -> None:
    client = httpx.Client(base_url=ui.url)
    resp = client.post("/ui/signin", data={"csrf": "forged", "token": OPERATE_TOKEN})
    assert resp.status_code == 403 and "postrelay_session" not in resp.headers.get("set-cookie", "")
    for evil in ("//evil.example/x", "https://evil.example/", "/ui\\..\\x", "/elsewhere"):
        client = httpx.Client(base_url=ui.url)
        form = client.get("/ui/signin")
        resp = client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": READ_TOKEN, "next": evil})
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/", evil


def test_failed_sign_ins_are_rate_limited(ui: Service) -> None:
    client = httpx.Client(base_url=ui.url)
    for _ in range(5):
        form = client.get("/ui/signin")
        resp = client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": "wrong-token-guess-000"})
        assert resp.status_code == 401 and "not valid" in resp.text
    form = client.get("/ui/signin")
    resp = client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": OPERATE_TOKEN})  # even the right one
    assert resp.status_code == 429 and 0 < int(resp.headers["retry-after"]) <= 900
    assert "Too many failed sign-ins" in resp.text and "postrelay_session" not in resp.headers.get("set-cookie", "")


def test_actions_need_the_csrf_token_and_an_operate_token(ui: Service) -> None:
    viewer = sign_in(ui, READ_TOKEN)
    page = viewer.get("/ui/deliveries")
    assert page.status_code == 200 and 'id="pause-crm"' not in page.text
    resp = viewer.post("/ui/destinations/crm/pause", data={"csrf": csrf_of(page.text)})
    assert resp.status_code == 403 and "may only look" in resp.text
    ops = sign_in(ui, OPERATE_TOKEN)
    page = ops.get("/ui/deliveries")
    assert 'id="pause-crm"' in page.text
    assert ops.post("/ui/destinations/crm/pause", data={}).status_code == 403          # no CSRF token
    assert ops.post("/ui/destinations/crm/pause", data={"csrf": "x" * 43}).status_code == 403
    assert not ui.redis.exists("pr:dest:{crm}:paused")
    resp = ops.post("/ui/destinations/crm/pause", data={"csrf": csrf_of(page.text), "back": "https://evil.example"})
    assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/deliveries?done=Paused")
    assert ui.redis.exists("pr:dest:{crm}:paused")
    after = ops.get(resp.headers["location"])
    assert "Paused crm" in after.text and 'id="resume-crm"' in after.text


def test_destination_settings_are_never_shown(ui: Service) -> None:
    ops = sign_in(ui, OPERATE_TOKEN)
    for path in ("/ui/", "/ui/deliveries", "/ui/followups"):
        html = ops.get(path).text
        assert SECRET_VALUE not in html and "whsec_" not in html and "127.0.0.1:9" not in html, path


def test_errors_are_pages_not_tracebacks(ui: Service) -> None:
    client = sign_in(ui, READ_TOKEN)
    resp = client.get("/ui/mailpieces/lob/no-such-piece")
    assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")
    assert "no events for mailpiece" in resp.text
    resp = client.get("/ui/mailpieces?stage=lost")
    assert resp.status_code == 400 and "not a canonical type" in resp.text
    resp = client.get("/ui/nowhere")
    assert resp.status_code == 404 and "Traceback" not in resp.text
    resp = client.get("/ui/campaigns/none-such")
    assert resp.status_code == 404 and "campaign_not_found" not in resp.text


def test_prefix_and_switch(make_service, redis_url: str) -> None:
    off = make_service(config_data=console_config(redis_url, "http://127.0.0.1:9", ui={"enabled": False}))
    assert off.http.get("/ui/signin").status_code == 404
    assert off.http.get("/ui/signin").json()["error"] == "not_found"
    moved = make_service(config_data=console_config(redis_url, "http://127.0.0.1:9", ui={"prefix": "/console"}))
    assert moved.http.get("/ui/signin").status_code == 404
    form = moved.http.get("/console/signin")
    assert form.status_code == 200 and 'action="/console/signin"' in form.text
    assert "Path=/console" in form.headers["set-cookie"]


def test_redis_down_is_a_503_for_the_api_and_a_page_for_the_console(make_service) -> None:
    from tests.support.redis_server import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    svc = make_service(config_data=console_config(dead, "http://127.0.0.1:9/unused"))
    for path in ("/v1/mailpieces?q=ada", "/v1/campaigns/spring", "/v1/dlq", "/v1/followups"):
        resp = svc.http.get(path, headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert resp.status_code == 503 and resp.json()["error"] == "redis_unavailable", path
        assert resp.headers["retry-after"] == "17"
    resp = svc.http.post("/v1/destinations/crm/pause", headers={"Authorization": f"Bearer {OPERATE_TOKEN}"})
    assert resp.status_code == 503 and resp.json()["error"] == "redis_unavailable"
    client = httpx.Client(base_url=svc.url)
    form = client.get("/ui/signin")  # the form itself needs no Redis
    assert form.status_code == 200
    page = client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": READ_TOKEN})
    assert page.status_code == 503 and "Redis is unreachable" in page.text and "Traceback" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["retry-after"] == "17"


def test_replay_the_selected_or_every_dead_letter_of_a_destination(ui: Service) -> None:
    from postrelay.core import keys
    from postrelay.core.stores import dlq
    from tests.console.conftest import piece_event

    dead = []
    for n in range(3):
        e = piece_event(f"ltr_{n}", "mailed", 1)
        dlq.add(ui.redis, f"crm|{e.id}", {"event": e.model_dump_json()}, "HTTP 410", [], 1_790_000_000.0 + n)
        dead.append(f"crm|{e.id}")
    ops = sign_in(ui, OPERATE_TOKEN)
    page = ops.get("/ui/deliveries")
    assert page.text.count('class="dead-letter"') == 3 and 'id="replay-all-crm"' in page.text
    resp = ops.post("/ui/deliveries/replay", data={"csrf": csrf_of(page.text), "ids": dead[:2]})
    assert resp.status_code == 303
    assert "Replayed 2 dead letter(s)." in ops.get(resp.headers["location"]).text
    assert {m.decode() for m in ui.redis.zrange(keys.DELIVERIES_DUE, 0, -1)} == set(dead[:2])
    resp = ops.post("/ui/deliveries/replay", data={"csrf": csrf_of(page.text), "destination": "crm"})
    assert "Replayed 1 dead letter(s)." in ops.get(resp.headers["location"]).text
    assert ui.redis.hlen(keys.DLQ) == 0 and ui.redis.zcard(keys.DELIVERIES_DUE) == 3
    resp = ops.post("/ui/deliveries/replay", data={"csrf": csrf_of(page.text)})
    assert "Select at least one dead letter" in ops.get(resp.headers["location"]).text
