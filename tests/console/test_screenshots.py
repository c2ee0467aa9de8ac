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
from postrelay.core import demo, keys
from postrelay.core.config import load_runtime_config, parse_config
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
    config = parse_config(data)
    r = redis.Redis.from_url(redis_url)
    demo.load(r, r, config, demo.Plan(pieces=1500, campaigns=4), now=datetime.now(UTC),
              on_events=followup_scheduler(config, r, r))  # as `postrelay demo` does
    svc = start_service(redis_url, config_data=data, clock=Clock(time.time()))
    yield svc, r
    svc.close()
    r.close()


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
    pages = [("overview", "/ui/", "cards"), ("mailpieces", "/ui/mailpieces?campaign=spring-postcards&limit=15", "results"),
             ("mailpiece", f"/ui/mailpieces/{source}/{piece_id}", "timeline"), ("campaigns", "/ui/campaigns", "campaigns"),
             ("campaign", "/ui/campaigns/spring-postcards", "funnel"), ("deliveries", "/ui/deliveries?limit=8", "dead-letters"),
             ("followups", "/ui/followups?limit=15", "followups")]
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
