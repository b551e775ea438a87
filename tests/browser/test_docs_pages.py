"""`/docs` and `/redoc` render the API's operations in a real browser while every other host is blocked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import SCREENSHOTS, LiveServer


def _resources(browser: Any) -> list[str]:
    entries: list[str] = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return entries


@pytest.mark.parametrize(("page", "operation"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_docs_page_renders_offline(browser: Any, live_server: LiveServer, page: str, operation: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*", "*fonts.googleapis*"]})
    try:
        browser.get(live_server.base_url + page)
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, operation))
        text = browser.find_element(By.TAG_NAME, "body").text
        assert "/v1/evaluations" in text or "evaluations" in text.lower()
        others = [url for url in _resources(browser) if not url.startswith(live_server.base_url)]
        assert others == [], f"{page} asked other hosts: {others}"
        SCREENSHOTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"docs-{page.strip('/')}.png"))
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
