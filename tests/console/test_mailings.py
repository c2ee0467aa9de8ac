"""The console's Mailings pages in a real headless Chromium: list, filters, paging, one mailing, the way to and
from the mailpiece page, sessions and roles, secrets never shown, hostile names and metadata shown as text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.console.test_browser import sign_in, text
from tests.mailings.conftest import ADA, LOB_KEY, PG_KEY, READ_TOKEN, Env, lob, mailing, make_env, postgrid
from tests.mailings.test_triggers import HUBSPOT_TRIGGER, hubspot_workflow
from tests.receiver.harness import API_TOKEN, PG_SECRETS
from tests.receiver.links_support import LINKS, apply_visits
from tests.support import payloads, signing
from tests.support.browser import browser, chromium, clicked, csp_violations, until
from tests.support.http_server import Reply

__all__ = ["browser", "chromium", "lob", "make_env", "postgrid"]
SCRIPT = "<script>alert('mailing')</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture
def menv(make_env: Callable[..., Env]) -> Env:
    return make_env({"links": LINKS, "triggers": [{**HUBSPOT_TRIGGER, "dry_run": True}]})


def no_alert(driver: Any) -> None:
    try:
        driver.switch_to.alert.dismiss()
    except NoAlertPresentException:
        return
    raise AssertionError("a hostile value ran a script")


def deliver_webhook(env: Env, piece: dict[str, Any]) -> None:
    """PostGrid reports progress on the piece: its event (with the metadata postrelay wrote) is applied."""
    order = {**piece, "status": "processed_for_delivery"}
    event = payloads.postgrid_event("postcard.updated", order, event_id=f"event_{piece['id']}",
                                    updated_fields={"status": "processed_for_delivery"})
    body, headers = signing.postgrid_json(event, PG_SECRETS[0], env.clock())
    assert env.svc.http.post("/webhooks/postgrid", content=body, headers=headers).status_code == 200
    apply_visits(env.svc)  # the worker's dispatcher applies the queued event


def test_list_filters_detail_and_the_way_to_and_from_the_mailpiece(menv: Env, browser) -> None:
    created = menv.post_mailing(mailing("pg", link={"target_url": "https://shop.example.com/back"},
                                        merge_variables={"pasted_key": PG_KEY}), key="m-created").json()["mailing_id"]
    menv.clock.advance(1)
    menv.lob.script = [Reply(422, {"error": {"message": "address_line1 is undeliverable", "code": "invalid_address"}})]
    failed = menv.post_mailing(mailing("lob"), key="m-failed").json()["mailing_id"]
    menv.clock.advance(1)
    dry = menv.fire("hubspot-winback", hubspot_workflow()).json()["mailing_id"]
    assert menv.work() == 3
    [piece] = menv.postgrid.pieces
    deliver_webhook(menv, piece)

    sign_in(browser, menv_console(menv), READ_TOKEN, "/ui/mailings")
    rows = until(lambda: browser.find_elements(By.CSS_SELECTOR, "#mailings tr.mailing"))
    assert [r.find_element(By.CSS_SELECTOR, "a.mailing-link").text for r in rows] == [dry, failed, created]
    assert "address_line1 is undeliverable" in rows[1].text and "dry run" in rows[0].text
    assert csp_violations(browser) == []
    Select(browser.find_element(By.ID, "m-status")).select_by_value("failed")
    clicked(browser, browser.find_element(By.ID, "m-filter"))
    until(lambda: "status=failed" in browser.current_url)
    assert [r.find_element(By.CSS_SELECTOR, "a.mailing-link").text
            for r in browser.find_elements(By.CSS_SELECTOR, "#mailings tr.mailing")] == [failed]
    browser.get(menv.svc.url + "/ui/mailings?provider=pg")
    assert [a.text for a in until(lambda: browser.find_elements(By.CSS_SELECTOR, "a.mailing-link"))] == [dry, created]
    browser.get(menv.svc.url + "/ui/mailings?trigger=hubspot-winback")
    assert [a.text for a in until(lambda: browser.find_elements(By.CSS_SELECTOR, "a.mailing-link"))] == [dry]
    browser.get(menv.svc.url + "/ui/mailings?status=queued")
    assert "No mailing matches." in until(lambda: text(browser, "mailings"))

    # one mailing: status, provider, piece, link, metadata, the request with the key as ***
    browser.get(menv.svc.url + f"/ui/mailings/{created}")
    assert until(lambda: text(browser, "mailing-status")) == "created"
    assert "pg" in text(browser, "mailing-provider") and "postgrid" in text(browser, "mailing-provider")
    view = menv.get_mailing(created).json()
    assert text(browser, "link-token") == view["link"]["token"] and text(browser, "link-url") == view["link"]["url"]
    metadata = text(browser, "mailing-metadata")
    assert "hubspot_contact_id 901" in metadata and f"postrelay_mailing {created}" in metadata
    assert f"postrelay_link {view['link']['token']}" in metadata
    assert text(browser, "request-line") == f"POST {menv.postgrid.url}/print-mail/v1/postcards"
    assert "X-API-Key ***" in text(browser, "request-headers") and f"Idempotency-Key {created}" in text(
        browser, "request-headers")
    body = browser.find_element(By.ID, "request-body").get_attribute("textContent")
    assert view["link"]["url"] in body and '"pasted_key": "***"' in body
    assert PG_KEY not in browser.page_source and LOB_KEY not in browser.page_source
    clicked(browser, browser.find_element(By.ID, "mailing-piece-link"))
    until(lambda: text(browser, "piece-id") == piece["id"])
    clicked(browser, browser.find_element(By.ID, "piece-mailing"))  # the piece came from a mailing: back to it
    until(lambda: text(browser, "mailing-id") == created)

    # a failed mailing names the provider's reason; a dry run shows what would have been sent
    browser.get(menv.svc.url + f"/ui/mailings/{failed}")
    assert "invalid_address: address_line1 is undeliverable" in until(lambda: text(browser, "mailing-reason"))
    assert "Authorization Basic ***" in text(browser, "request-headers")
    browser.get(menv.svc.url + f"/ui/mailings/{dry}")
    assert "dry run" in until(lambda: text(browser, "mailing-facts"))
    assert '"firstName": "Ada"' in browser.find_element(By.ID, "request-body").get_attribute("textContent")
    assert LOB_KEY not in browser.page_source and PG_KEY not in browser.page_source
    assert csp_violations(browser) == []


def test_hostile_names_metadata_and_merge_variables_are_shown_as_text(menv: Env, browser) -> None:
    hostile = mailing("pg", to={**ADA, "name": SCRIPT, "company": IMG}, metadata={"note": SCRIPT, "deal": IMG},
                      merge_variables={"first_name": IMG, "greeting": SCRIPT}, campaign_id=SCRIPT)
    mid = menv.post_mailing(hostile, key="hostile").json()["mailing_id"]
    menv.work()
    sign_in(browser, menv_console(menv), READ_TOKEN, "/ui/mailings")
    cell = until(lambda: browser.find_element(By.CSS_SELECTOR, "#mailings td.recipient"))
    assert cell.text == SCRIPT
    browser.get(menv.svc.url + f"/ui/mailings/{mid}")
    assert until(lambda: text(browser, "mailing-recipient")) == SCRIPT
    metadata = text(browser, "mailing-metadata")
    assert f"note {SCRIPT}" in metadata and f"deal {IMG}" in metadata
    body = browser.find_element(By.ID, "request-body").get_attribute("textContent")
    assert SCRIPT in body and IMG in body
    assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
    no_alert(browser)
    assert csp_violations(browser) == []


def test_pages_need_a_session_and_bad_input_gets_an_error_page(menv: Env, browser) -> None:
    for path in ("/ui/mailings", "/ui/mailings/ml_00000000000000000000000000"):
        resp = httpx.get(menv.svc.url + path, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/signin?next=")
    sign_in(browser, menv_console(menv), API_TOKEN, "/ui/mailings")  # an operate token sees the same pages
    assert "No mailing yet." in until(lambda: text(browser, "mailings"))
    browser.get(menv.svc.url + "/ui/mailings/ml_nope<b>")
    page = until(lambda: browser.find_element(By.TAG_NAME, "main").text)
    assert "No mailing 'ml_nope<b>'" in page and browser.find_elements(By.CSS_SELECTOR, "main b") == []
    browser.get(menv.svc.url + "/ui/mailings?status=lost")
    assert "status must be one of" in until(lambda: browser.find_element(By.TAG_NAME, "main").text)
    browser.get(menv.svc.url + "/ui/mailings?cursor=not-ours")
    assert "cursor is not one this API returned" in until(lambda: browser.find_element(By.TAG_NAME, "main").text)


def test_the_list_pages_newest_first(menv: Env, browser) -> None:
    ids = []
    for i in range(30):
        menv.clock.advance(1)
        ids.append(menv.post_mailing(mailing("pg"), key=f"page-{i}").json()["mailing_id"])
    sign_in(browser, menv_console(menv), READ_TOKEN, "/ui/mailings")
    first = [a.text for a in until(lambda: browser.find_elements(By.CSS_SELECTOR, "a.mailing-link"))]
    assert first == ids[::-1][:25]
    clicked(browser, browser.find_element(By.ID, "next-page"))
    until(lambda: "cursor=" in browser.current_url)
    second = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.mailing-link")]
    assert second == ids[::-1][25:] and browser.find_elements(By.ID, "next-page") == []


class _Console:
    """What `sign_in` needs of a console: its URL."""

    def __init__(self, url: str) -> None:
        self.url = url


def menv_console(env: Env) -> Any:
    return _Console(env.svc.url)
