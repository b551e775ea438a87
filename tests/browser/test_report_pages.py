"""Report pages in a real browser: a finished evaluation (a real one, on the small MNIST CNN) and a
training job. Plots drawn and not empty, example images decoded, no console errors, user text shown as
text, and a screenshot of each page in test-artifacts/.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.artifacts import EXAMPLES_ARTIFACT
from service.domain.datasets import ArrayDataset
from service.domain.results import Progress
from service.domain.specs import EvaluationOptions, FGSMSpec, PGDSpec
from tests.browser.conftest import SCREENSHOTS, LiveServer
from tests.unit.ui_fixtures import EVIL, evaluation_result, finished_job, training_result
from workers.evaluation.examples import examples_npz


def _evil_model(server: LiveServer, sha: str) -> str:
    model, _ = server.store.add_model(
        owner="local", name=EVIL, sha256=sha, format="keras", size_bytes=1, output="logits"
    )
    return model.id


@pytest.fixture(scope="module")
def evaluation_job(live_server: LiveServer, mnist_cnn: Any, mnist_test: ArrayDataset) -> str:
    """A real evaluation (FGSM and PGD-10 at three eps on 200 test digits) stored as the worker would."""
    from workers.evaluation.engine import evaluate
    from workers.models.loading import from_keras

    order = np.random.default_rng(0).permutation(mnist_test.num_samples)[:200]
    data = ArrayDataset(mnist_test.x[order], mnist_test.y[order], mnist_test.sha256, mnist_test.name)
    options = EvaluationOptions(
        attacks=[FGSMSpec(eps=[0.05, 0.1, 0.2]), PGDSpec(eps=[0.05, 0.1, 0.2], steps=10)], batch_size=100
    )
    outcome = evaluate(from_keras(mnist_cnn, sha256="9" * 64), data, options, keep_examples=2)
    assert outcome.examples is not None
    spec = {"model_id": _evil_model(live_server, "9" * 64), "dataset_id": "builtin:mnist-5k:test",
            **options.model_dump(mode="json")}  # fmt: skip
    result = outcome.result.model_dump(mode="json")
    job_id = finished_job(live_server.store, owner="local", kind="evaluation", spec=spec, result=result)
    live_server.artifacts.write_job_artifact(job_id, EXAMPLES_ARTIFACT, examples_npz(outcome.examples))
    return job_id


@pytest.fixture(scope="module")
def training_job(live_server: LiveServer) -> str:
    spec = {"model_id": _evil_model(live_server, "8" * 64), "dataset_id": "builtin:mnist-5k:train",
            "method": "fgsm-rs", "eps": 0.3, "epochs": 5}  # fmt: skip
    job_id = finished_job(
        live_server.store, owner="local", kind="training", spec=spec, result=training_result()
    )
    live_server.artifacts.write_job_artifact(job_id, "model.zip", b"PK\x05\x06" + b"\0" * 18)
    return job_id


def _load(browser: Any, url: str) -> None:
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    assert browser.execute_script("return document.readyState") == "complete"


def _console_errors(browser: Any) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]


def _charts(browser: Any, container: str) -> list[dict[str, Any]]:
    """Size and drawn marks of each SVG chart inside `container`, measured by the browser."""
    script = """
      return Array.from(document.querySelectorAll(arguments[0] + ' svg.chart')).map(svg => {
        const box = svg.getBoundingClientRect();
        const lines = Array.from(svg.querySelectorAll('polyline')).map(p => p.getBBox().width);
        const bars = Array.from(svg.querySelectorAll('rect.bar')).map(r => r.getBBox().height);
        return {width: box.width, height: box.height, lines: lines, bars: bars};
      });
    """
    charts: list[dict[str, Any]] = browser.execute_script(script, container)
    return charts


def _alert_open(browser: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        browser.switch_to.alert.dismiss()
    except NoAlertPresentException:
        return False
    return True


def _shoot(browser: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.set_window_size(1280, 800)  # measure the page, not the window a previous shot left
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(int(height), 800), 8000))
    assert browser.save_screenshot(str(SCREENSHOTS / name))
    assert (SCREENSHOTS / name).stat().st_size > 10_000


def test_evaluation_report_page(browser: Any, live_server: LiveServer, evaluation_job: str) -> None:
    _load(browser, f"{live_server.base_url}/ui/jobs/{evaluation_job}")
    assert not _alert_open(browser)
    assert browser.find_element("id", "model-name").text.startswith(EVIL)

    curves = _charts(browser, "#curves")
    assert curves and all(c["width"] > 200 and c["height"] > 100 for c in curves)
    assert len(curves[0]["lines"]) == 3 and all(w > 50 for w in curves[0]["lines"])  # fgsm, pgd, worst case
    per_class = _charts(browser, "#per-class")
    assert per_class and len(per_class[0]["bars"]) >= 10 and max(per_class[0]["bars"]) > 20

    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('#examples img'))"
        ".map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    # Two digits per class, ten classes: a clean image and (adversarial, perturbation) at three eps.
    assert len(images) == 20 * 7
    assert all(done and width == 28 and height == 28 for done, width, height in images)

    assert _console_errors(browser) == []
    _shoot(browser, "report-evaluation.png")


def test_training_report_page(browser: Any, live_server: LiveServer, training_job: str) -> None:
    _load(browser, f"{live_server.base_url}/ui/jobs/{training_job}")
    assert not _alert_open(browser)
    assert browser.find_element("id", "model-name").text.startswith(EVIL)
    curves = _charts(browser, "#training-curves")
    assert len(curves) == 2 and all(line > 100 for c in curves for line in c["lines"])
    assert len(_charts(browser, "#comparison-curves")) == 1
    assert "+40.0 pts" in browser.find_element("id", "before-after").text
    download = browser.find_element("css selector", "#downloads a.download")
    assert download.get_attribute("href").endswith(f"/ui/jobs/{training_job}/artifacts/model.zip")
    assert _console_errors(browser) == []
    _shoot(browser, "report-training.png")


def test_jobs_page_updates_live_without_errors(
    browser: Any, live_server: LiveServer, evaluation_job: str, training_job: str
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    store = live_server.store
    running, _ = store.create_job(owner="local", kind="evaluation", spec={"model_id": "mdl_none"})
    assert store.claim(running.id, worker="w", lease_seconds=600) is not None
    store.report_progress(
        running.id, worker="w", progress=Progress(fraction=0.25, stage="fgsm"), lease_seconds=600
    )
    _load(browser, f"{live_server.base_url}/ui")
    assert not _alert_open(browser)
    bar = f"#jobs tr[data-job-id='{running.id}'] progress"
    assert browser.find_element("css selector", bar).get_attribute("value") == "25"
    # The page polls every 2 s and redraws the rows from what it gets.
    store.report_progress(
        running.id, worker="w", progress=Progress(fraction=0.75, stage="pgd"), lease_seconds=600
    )
    WebDriverWait(browser, 10).until(
        lambda b: b.find_element("css selector", bar).get_attribute("value") == "75"
    )
    rows = browser.find_elements("css selector", "#jobs tbody tr")
    assert [r.get_attribute("data-job-id") for r in rows][:3] == [running.id, training_job, evaluation_job]
    assert EVIL in rows[1].text and "75% pgd" in rows[0].text
    _shoot(browser, "jobs.png")
    store.finish(running.id, worker="w", status="succeeded", result={})
    WebDriverWait(browser, 10).until(lambda b: not b.find_elements("css selector", bar))
    assert not _alert_open(browser)
    assert _console_errors(browser) == []


def test_standalone_html_report(browser: Any, live_server: LiveServer, evaluation_job: str) -> None:
    _load(browser, f"{live_server.base_url}/v1/jobs/{evaluation_job}/report?format=html")
    assert not _alert_open(browser)
    assert browser.find_element("id", "model-name").text.startswith(EVIL)
    assert _charts(browser, "#curves")
    # The inline stylesheet is allowed by its hash: a violation would be a console error.
    assert (
        browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        == "rgb(246, 247, 249)"
    )
    assert _console_errors(browser) == []


def test_a_running_jobs_page_follows_it_to_the_end(browser: Any, live_server: LiveServer) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    store = live_server.store
    job, _ = store.create_job(owner="local", kind="evaluation", spec={"model_id": "mdl_none"})
    assert store.claim(job.id, worker="w", lease_seconds=600) is not None
    store.report_progress(
        job.id, worker="w", progress=Progress(fraction=0.1, stage="clean"), lease_seconds=600
    )
    _load(browser, f"{live_server.base_url}/ui/jobs/{job.id}")
    store.report_progress(job.id, worker="w", progress=Progress(fraction=0.6, stage="pgd"), lease_seconds=600)
    WebDriverWait(browser, 10).until(
        lambda b: b.find_element("css selector", "#job-status progress").get_attribute("value") == "60"
    )
    store.finish(job.id, worker="w", status="succeeded", result=evaluation_result())
    # Once the job has finished, the page reloads itself into the report.
    WebDriverWait(browser, 10).until(lambda b: b.find_elements("css selector", "#curves svg.chart"))
    assert _console_errors(browser) == []


def test_login_form_sets_the_key_cookie(browser: Any, live_server: LiveServer, evaluation_job: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    live_server.app.state.key_resolver = {"key-local": "local"}.get
    try:
        browser.delete_all_cookies()
        _load(browser, f"{live_server.base_url}/ui/jobs/{evaluation_job}")
        assert "/ui/login" in browser.current_url
        browser.find_element("id", "key").send_keys("wrong")
        browser.find_element("css selector", "form button[type=submit]").click()
        WebDriverWait(browser, 10).until(lambda b: b.find_elements("css selector", "p.error"))
        browser.find_element("id", "key").send_keys("key-local")
        browser.find_element("css selector", "main form button[type=submit]").click()
        # Back to the page that asked for the login.
        WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith(f"/ui/jobs/{evaluation_job}"))
        assert browser.find_element("id", "model-name").text.startswith(EVIL)
        cookie = browser.get_cookie("parry_key")
        assert cookie is not None and cookie["httpOnly"] and cookie["value"] == "key-local"
        # Only the wrong key's 401 answer is logged; nothing else went wrong.
        errors = _console_errors(browser)
        assert all("401" in e["message"] for e in errors), errors
    finally:
        live_server.app.state.key_resolver = None
        browser.delete_all_cookies()
