"""The console in a real headless Chromium: what a marketer and an operator do, end to end."""

from __future__ import annotations

import json
from typing import Any

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.console.conftest import OPERATE_TOKEN, READ_TOKEN, Console, piece_event
from tests.support.browser import browser, chromium, clicked, csp_violations, until
from tests.support.processes import wait_for

__all__ = ["browser", "chromium"]
XSS = "<img src=x onerror=alert(1)>"


def sign_in(driver: Any, console: Console, token: str, path: str = "/ui/") -> None:
    driver.get(console.url + path)
    until(lambda: driver.find_element(By.ID, "token"), what="the sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin").click()
    until(lambda: driver.find_elements(By.ID, "signout"), what="signed in")


def text(driver: Any, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def test_sign_in_find_a_piece_by_email_read_its_timeline_and_open_its_funnel(console: Console, browser) -> None:
    console.feed(piece_event("ltr_ada", "mailed", 1, zip_code="10013", email="ada@example.com"),
                 piece_event("ltr_ada", "in_transit", 2, zip_code="07097", email="ada@example.com"),
                 piece_event("ltr_ada", "processed_for_delivery", 4, zip_code="10013", email="ada@example.com"),
                 piece_event("ltr_ada", "delivered", 5, zip_code=None, email="ada@example.com"),
                 piece_event("ltr_bob", "mailed", 1, name="Bob", email="bob@example.com"),
                 piece_event("ltr_bob", "returned_to_sender", 8, name="Bob", email="bob@example.com"))
    console.settled()
    # a wrong token is refused, with a message, and no session
    browser.get(console.url + "/ui/mailpieces")
    until(lambda: browser.find_element(By.ID, "token")).send_keys("not-a-token-at-all")
    browser.find_element(By.ID, "signin").click()
    assert "not valid" in until(lambda: text(browser, "signin-error"))
    sign_in(browser, console, READ_TOKEN, "/ui/mailpieces")
    assert browser.current_url.endswith("/ui/mailpieces")  # back where sign-in was asked for
    browser.find_element(By.ID, "email").send_keys("ADA@example.com")
    clicked(browser, browser.find_element(By.ID, "search-submit"))
    links = until(lambda: browser.find_elements(By.CSS_SELECTOR, "#results a.piece-link"))
    assert [a.text for a in links] == ["ltr_ada"]
    clicked(browser, links[0])
    until(lambda: text(browser, "piece-id") == "ltr_ada")
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tr.event")
    assert [r.find_element(By.CSS_SELECTOR, ".etype").text for r in rows] == [
        "mailed", "in transit", "processed for delivery", "delivered"]
    assert "07097" in rows[1].text
    assert "delivered" in text(browser, "piece-stage")
    done = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#progress li.done")]
    assert done[-1] == "delivered" and len(done) == 7
    raw = rows[0].find_element(By.CSS_SELECTOR, "details")
    assert not raw.find_element(By.CSS_SELECTOR, "pre").is_displayed()
    raw.find_element(By.CSS_SELECTOR, "summary").click()  # raw events expand in place
    assert '"type": "mailed"' in until(lambda: raw.find_element(By.CSS_SELECTOR, "pre").text)
    clicked(browser, browser.find_element(By.LINK_TEXT, "spring"))
    until(lambda: text(browser, "campaign-id") == "spring")
    funnel = {td.get_attribute("data-stage"): int(td.text)
              for td in browser.find_elements(By.CSS_SELECTOR, "#funnel-table td")}
    assert funnel["mailed"] == 2 and funnel["delivered"] == 1 and funnel["processed_for_delivery"] == 1
    assert "1 (50.0% of mailed)" in text(browser, "returned-rate")
    assert text(browser, "median-transit") == "3.0 days"
    assert browser.find_elements(By.CSS_SELECTOR, "#funnel svg rect")  # the chart is drawn
    assert csp_violations(browser) == []
    browser.find_element(By.ID, "signout").click()
    until(lambda: browser.find_element(By.ID, "token"))
    browser.get(console.url + "/ui/campaigns")
    until(lambda: browser.find_element(By.ID, "token"))  # signed out: back to the sign-in page


def test_replay_a_dead_letter_and_see_it_delivered(console: Console, browser) -> None:
    console.crm.failing = True
    console.feed(piece_event("ltr_dl", "mailed", 1))
    console.settled()
    sign_in(browser, console, OPERATE_TOKEN, "/ui/deliveries")
    row = until(lambda: browser.find_element(By.CSS_SELECTOR, "#dead-letters tr.dead-letter"))
    assert "crm" in row.text and "contact locked" in row.text
    console.crm.failing = False
    clicked(browser, row.find_element(By.CSS_SELECTOR, "button.replay-one"))
    assert "Replayed 1 dead letter(s)." in until(lambda: text(browser, "flash"))
    assert wait_for(lambda: len(console.crm.received()) == 2, 30)
    assert "ltr_dl" in json.dumps(console.crm.received()[-1])
    console.settled()
    browser.get(console.url + "/ui/mailpieces/lob/ltr_dl")
    state = until(lambda: browser.find_element(By.CSS_SELECTOR, "#deliveries .state"))
    assert state.text == "done"
    browser.get(console.url + "/ui/deliveries")
    assert "No dead letter" in until(lambda: browser.find_element(By.ID, "dead-letters").text)


def test_pause_and_resume_a_destination(console: Console, browser) -> None:
    sign_in(browser, console, OPERATE_TOKEN, "/ui/deliveries")
    clicked(browser, until(lambda: browser.find_element(By.ID, "pause-crm")))
    assert "Paused crm" in until(lambda: text(browser, "flash"))
    assert browser.find_element(By.CSS_SELECTOR, "#dest-crm .paused").text == "paused"
    console.feed(piece_event("ltr_pz", "mailed", 1))
    assert wait_for(lambda: console.redis.llen("pr:dest:{crm}:parked") == 1, 30)
    assert console.crm.received() == []
    clicked(browser, browser.find_element(By.ID, "resume-crm"))  # the page with "Paused crm" must be gone
    assert "Resumed crm: 1 parked" in until(lambda: text(browser, "flash"))
    assert wait_for(lambda: len(console.crm.received()) == 1, 30)


def test_cancel_a_follow_up(console: Console, browser) -> None:
    console.feed(piece_event("ltr_f", "processed_for_delivery", 4), piece_event("ltr_g", "processed_for_delivery", 4))
    console.settled()
    sign_in(browser, console, OPERATE_TOKEN, "/ui/followups")
    rows = until(lambda: browser.find_elements(By.CSS_SELECTOR, "#followups tr.followup"))
    assert len(rows) == 2
    target = next(r for r in rows if "ltr_f" in r.text)
    clicked(browser, target.find_element(By.CSS_SELECTOR, "button.cancel"))
    assert "Cancelled nudge|lob|ltr_f." in until(lambda: text(browser, "flash"))
    left = browser.find_elements(By.CSS_SELECTOR, "#followups tr.followup")
    assert len(left) == 1 and "ltr_g" in left[0].text
    assert console.redis.zscore("pr:fu:due", "nudge|lob|ltr_f") is None


def test_a_recipient_name_with_html_renders_as_text(console: Console, browser) -> None:
    console.feed(piece_event("ltr_x", "mailed", 1, name=XSS, email="x@example.com"))
    console.settled()
    sign_in(browser, console, READ_TOKEN, "/ui/mailpieces?q=ltr_x")
    cell = until(lambda: browser.find_element(By.CSS_SELECTOR, "#results td.recipient"))
    assert cell.text == XSS
    assert browser.find_elements(By.CSS_SELECTOR, "#results img") == []
    browser.get(console.url + "/ui/mailpieces/lob/ltr_x")
    assert until(lambda: text(browser, "recipient-name")) == XSS
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    try:
        browser.switch_to.alert.dismiss()
        raise AssertionError("the recipient name ran a script")
    except NoAlertPresentException:
        pass


def test_a_read_token_sees_no_operator_buttons(console: Console, browser) -> None:
    console.crm.failing = True
    console.feed(piece_event("ltr_r", "processed_for_delivery", 4))
    console.settled()
    sign_in(browser, console, READ_TOKEN, "/ui/deliveries")
    until(lambda: browser.find_element(By.CSS_SELECTOR, "#dead-letters tr.dead-letter"))
    assert browser.find_elements(By.CSS_SELECTOR, "button.replay-one") == []
    assert browser.find_elements(By.ID, "pause-crm") == []
    browser.get(console.url + "/ui/followups")
    until(lambda: browser.find_element(By.CSS_SELECTOR, "#followups tr.followup"))
    assert browser.find_elements(By.CSS_SELECTOR, "button.cancel") == []
