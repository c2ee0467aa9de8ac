"""A real headless Chromium for console tests, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the driver path is given explicitly and Selenium Manager is told to stay offline
(`SE_OFFLINE=true`); the browser runs with a fresh profile and its background networking off. `.ci/run`
installs `chromium` and `chromium-driver`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("POSTRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("POSTRELAY_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,1000", "--force-device-scale-factor=1"]


def start_browser() -> tuple[Any, str]:
    """A new Chrome session (and its profile directory, removed by the caller)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)")
    profile = tempfile.mkdtemp(prefix="postrelay-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver, profile


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One browser for the session; each test starts by clearing its cookies (`browser`)."""
    driver, profile = start_browser()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


_LAST: dict[str, Any] = {}


@pytest.fixture
def browser(chromium: Any) -> Any:
    """The session's browser with no cookies and no pending console messages."""
    _LAST["driver"] = chromium
    chromium.delete_all_cookies()
    chromium.get("about:blank")
    chromium.get_log("browser")
    return chromium


def until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy (returned); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # stale elements while a page loads
            last = exc
        time.sleep(interval)
    page = ""
    driver = getattr(predicate, "__self__", None) or _LAST.get("driver")
    if driver is not None:
        page = f" at {driver.current_url}: {driver.find_element('tag name', 'body').text[:1500]!r}"
    raise AssertionError(f"timed out waiting for {what or predicate}: {last!r}{page}")


def clicked(driver: Any, element: Any) -> None:
    """Click `element` (a console button or link: each loads a page) and wait until the page it was on is gone,
    so that what the test reads next comes from the new page, never from the old one."""
    from selenium.common.exceptions import StaleElementReferenceException

    page = driver.find_element("tag name", "html")
    element.click()

    def gone() -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        return False

    until(gone, what="the next page")


def csp_violations(driver: Any) -> list[str]:
    """Console messages about a blocked script/style/resource since the last call (there must be none)."""
    return [m["message"] for m in driver.get_log("browser")
            if "Content Security Policy" in m["message"] or "Refused to" in m["message"]]
