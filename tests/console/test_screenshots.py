"""Every console page rendered in Chromium from the demo data set; the screenshots in docs/console.md come from here.

`POSTRELAY_SCREENSHOTS=docs/console` (as `make screenshots` sets it) writes the PNGs there; otherwise into the
test's temporary directory. Each page must render without a Content-Security-Policy violation.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By

from postrelay.cli.console import followup_scheduler
from postrelay.core import demo, keys, mailing_links
from postrelay.core.config import load_runtime_config, parse_config
from postrelay.core.mailing import MailingRequest, mailing_id
from postrelay.core.stores import mailings
from postrelay.core.timeline import load_piece, seen_types
from tests.console.conftest import OPERATE_TOKEN
from tests.receiver.harness import Clock, start_service
from tests.support.browser import browser, chromium, csp_violations, until
from tests.support.processes import ROOT

__all__ = ["browser", "chromium"]


@pytest.fixture
def demo_service(redis_url: str) -> Any:
    config = load_runtime_config(str(ROOT / "examples" / "demo.toml"))
    data = config.model_dump(mode="json", exclude_none=True)
    data["server"].update(redis_url=redis_url, tokens=[{"name": "ops", "token": OPERATE_TOKEN, "role": "operate"}])
    data["destinations"]["postgrid_mail"] = {"type": "postgrid", "api_key": "test_sk_demo_0123456789abcdef",
                                             "front_template": "template_front_spring",
                                             "back_template": "template_back_spring", "from_contact": "contact_shop"}
    data["links"] = {"base_url": "https://go.example.com", "allowed_hosts": ["shop.example.com"]}
    data["triggers"] = [{"name": "abandoned-cart", "provider": "postgrid_mail", "kind": "postcard",
                         "token": "demo-trigger-token-0123456789", "idempotency_key": "{id}"}]
    config = parse_config(data)
    r = redis.Redis.from_url(redis_url)
    demo.load(r, r, config, demo.Plan(pieces=1500, campaigns=4), now=datetime.now(UTC),
              on_events=followup_scheduler(config, r, r))  # as `postrelay demo` does
    svc = start_service(redis_url, config_data=data, clock=Clock(time.time()))
    yield svc, r
    svc.close()
    r.close()


def seed_mailings(r: redis.Redis, config: Any, now: float, piece_id: str | None) -> str:
    """A few mailings as the API, a trigger and a follow-up leave them: created (with a tracking link, on a demo
    piece), failed with the provider's reason, retrying, a dry run. Returns the created one's id."""
    names = [("Ada Lovelace", "created", "api"), ("Grace Hopper", "failed", "trigger:abandoned-cart"),
             ("Alan Turing", "queued", "followup:second-postcard"), ("Katherine Johnson", "dry_run",
                                                                     "trigger:abandoned-cart")]
    first = ""
    for i, (name, status, origin) in enumerate(names):
        first_name, _, last = name.partition(" ")
        request = MailingRequest.model_validate({
            "provider": "postgrid_mail", "kind": "postcard", "campaign_id": "spring-postcards",
            "to": {"name": name, "address_line1": f"{100 + i} Main St", "city": "Springfield", "region": "IL",
                   "postal_code": "62701", "country": "US", "email": f"{first_name.lower()}@example.com"},
            "merge_variables": {"first_name": first_name, "discount_code": f"SPRING{10 + i}"},
            "metadata": {"hubspot_contact_id": str(9001 + i), "last_name": last},
            **({"link": {"target_url": "https://shop.example.com/spring", "utm": {"source": "postcard"}}}
               if status == "created" else {})}).with_defaults({
                   "front_template": "template_front_spring", "back_template": "template_back_spring",
                   "from_contact": "contact_shop"})
        mid = mailing_id("demo", name)
        trigger = origin.split(":", 1)[1] if origin.startswith("trigger:") else None
        when = now - 3600 * (4 - i)
        fields = mailings.new_fields(mid, request.as_json(), request.fingerprint(), origin, when, trigger=trigger,
                                     dry_run=status == "dry_run", provider_type="postgrid")
        mailings.create(r, fields, when, 86400)
        if status == "created":
            mailing_links.ensure(r, config.links, mid, request, when)
            piece = piece_id or "postcard_demo_1"
            mailing_links.bind(r, mailing_links.recorded(r, mid) or {}, "postgrid", piece, when)
            mailings.update(r, mid, {"status": "created", "piece_id": piece, "http_status": 200, "attempts": 1},
                            now=when + 2)
            first = mid
        elif status == "failed":
            mailings.update(r, mid, {"status": "failed", "http_status": 422, "attempts": 1,
                                     "reason": "HTTP 422: invalid_address_error: the address could not be verified"},
                            now=when + 2)
        elif status == "queued":
            mailings.update(r, mid, {"attempts": 2, "last_error": "HTTP 503: service unavailable",
                                     "next_attempt_at": mailings.iso(now + 60)}, due=now + 60, now=when + 2)
        else:
            mailings.update(r, mid, {"status": "dry_run"}, now=when + 2)
    return first


def full_page(driver: Any, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(700, height + 40), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def test_every_page_renders_from_the_demo_data(demo_service, browser, tmp_path: Path) -> None:
    svc, r = demo_service
    out = Path(os.environ.get("POSTRELAY_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    browser.get(svc.url + "/ui/")
    until(lambda: browser.find_element(By.ID, "token"))
    full_page(browser, out / "signin.png")
    browser.find_element(By.ID, "token").send_keys(OPERATE_TOKEN)
    browser.find_element(By.ID, "signin").click()
    until(lambda: browser.find_elements(By.ID, "cards"))
    # a US piece that was delivered and visited: its page shows the whole journey and engagement
    visited = {m.decode() for m in r.zrange(keys.index_set("stage", "delivered"), 0, -1)}
    member = next(m for m in visited if "purl_opened" in seen_types(r, [tuple(m.split(":", 1))])[tuple(m.split(":", 1))]
                  and load_piece(r, *m.split(":", 1))["country"] == "US")
    source, piece_id = member.split(":", 1)
    postgrid_piece = next((m.split(":", 1)[1] for m in sorted(visited) if m.startswith("postgrid:")), None)
    mailing_id = seed_mailings(r, svc.config, time.time(), postgrid_piece)
    pages = [("overview", "/ui/", "cards"), ("mailpieces", "/ui/mailpieces?campaign=spring-postcards&limit=15", "results"),
             ("mailpiece", f"/ui/mailpieces/{source}/{piece_id}", "timeline"), ("campaigns", "/ui/campaigns", "campaigns"),
             ("campaign", "/ui/campaigns/spring-postcards", "funnel"), ("deliveries", "/ui/deliveries?limit=8", "dead-letters"),
             ("followups", "/ui/followups?limit=15", "followups"), ("mailings", "/ui/mailings", "mailings"),
             ("mailing", f"/ui/mailings/{mailing_id}", "mailing-facts")]
    for name, path, marker in pages:
        browser.get(svc.url + path)
        until(lambda m=marker: browser.find_elements(By.ID, m), what=name)
        if name == "mailpiece":
            browser.find_element(By.CSS_SELECTOR, "#timeline details summary").click()  # a raw event, expanded
        full_page(browser, out / f"{name}.png")
        assert (out / f"{name}.png").stat().st_size > 20_000, name
        assert csp_violations(browser) == [], name
    browser.get(svc.url + "/ui/deliveries")
    assert "erp" in browser.find_element(By.ID, "dead-letters").text
    assert browser.find_element(By.CSS_SELECTOR, "#dest-erp .state").text == "open"
