"""The UI's actions in a real browser, by keyboard alone: upload a dataset and a model, submit an evaluation
with an attack preset, follow the job's live events, cancel it. Screenshots in test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.domain.results import Progress
from tests.browser.conftest import SCREENSHOTS, LiveServer
from tests.unit.api_helpers import npz_bytes, saved_model_zip


def _tab_to(browser: Any, element_id: str, limit: int = 60) -> None:
    """Press Tab until `element_id` has the focus: it is reachable from the keyboard."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(limit):
        if browser.execute_script("return document.activeElement && document.activeElement.id") == element_id:
            return
        ActionChains(browser).send_keys(Keys.TAB).perform()
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


def _press(browser: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).send_keys(key).perform()


def _shoot(browser: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.set_window_size(1280, 900)
    assert browser.save_screenshot(str(SCREENSHOTS / name))
    assert (SCREENSHOTS / name).stat().st_size > 10_000


def _text(browser: Any, selector: str) -> str:
    """The text of an element, read in one script (no stale reference while the page reloads)."""
    text: str = browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector
    )
    return text


def _attribute(browser: Any, selector: str, name: str) -> str | None:
    value: str | None = browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
        selector,
        name,
    )
    return value


def _errors(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


def test_upload_submit_follow_and_cancel_by_keyboard(
    browser: Any, live_server: LiveServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    dataset_file = tmp_path / "digits-small.npz"
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype(np.float32)
    dataset_file.write_bytes(npz_bytes(x=x, y=np.arange(20) % 10))
    model_file = tmp_path / "tiny.zip"
    model_file.write_bytes(saved_model_zip(b"browser"))
    browser.delete_all_cookies()
    browser.get_log("browser")
    browser.get(f"{live_server.base_url}/ui")
    _tab_to(browser, "new-evaluation")
    _press(browser, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith("/ui/new"))

    # A dataset: the file chooser takes the path (what a user picks), the rest is Tab and Enter.
    browser.find_element("id", "dataset-file").send_keys(str(dataset_file))
    _tab_to(browser, "dataset-name")
    _press(browser, "my digits")
    _tab_to(browser, "upload-dataset")
    _press(browser, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: "dataset my digits" in _text(b, "#form-notice"))
    browser.find_element("id", "model-file").send_keys(str(model_file))
    _tab_to(browser, "upload-model")
    _press(browser, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: "model tiny" in _text(b, "#form-notice"))
    _shoot(browser, "ui-new-evaluation.png")

    # The evaluation: the uploaded dataset comes first in its list; the thorough preset, by arrow keys.
    _tab_to(browser, "preset-standard")
    _press(browser, Keys.ARROW_DOWN)
    assert browser.find_element("id", "preset-thorough").is_selected()
    _tab_to(browser, "evaluate")
    _press(browser, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: "/ui/jobs/job_" in b.current_url)
    job_id = browser.current_url.rsplit("/", 1)[-1]
    job = live_server.store.get_job(job_id)
    assert [a["name"] for a in job.spec["attacks"]] == ["pgd", "apgd-ce", "apgd-dlr"]
    assert job.spec["dataset_id"].startswith("dst_") and job.spec["max_samples"] == 1000

    # The page listens to the job's live events; a worker's progress shows without a reload.
    WebDriverWait(browser, 10).until(lambda b: _attribute(b, "#job-status", "data-live") == "events")
    store = live_server.store
    assert store.claim(job_id, worker="w", lease_seconds=600) is not None
    store.report_progress(job_id, worker="w", progress=Progress(fraction=0.4, stage="pgd"), lease_seconds=600)
    WebDriverWait(browser, 10).until(lambda b: _attribute(b, "#job-status progress", "value") == "40")
    assert _text(browser, "#job-status .status") == "running"
    _shoot(browser, "ui-job-running.png")

    # Cancel, by keyboard; the worker stops at its next report and the page ends as cancelled.
    _tab_to(browser, "cancel")
    _press(browser, Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: "cancel requested" in _text(b, "#job-status"))
    assert store.get_job(job_id).cancel_requested
    assert not store.report_progress(job_id, worker="w", progress=Progress(fraction=0.5), lease_seconds=600)
    assert store.finish(job_id, worker="w", status="cancelled")
    WebDriverWait(browser, 10).until(lambda b: _text(b, "#job-status .status") == "cancelled")
    _shoot(browser, "ui-job-cancelled.png")
    assert _errors(browser) == []
