"""Headless Chromium (Debian `chromium` and `chromium-driver`, driven by selenium) against the API served
by uvicorn in a thread. Nothing is installed here: without the browser, the driver or selenium, the tests
skip and say which one is missing.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from service.api.main import create_app
from service.settings import Settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from tests.unit.api_helpers import DEAD_REDIS, RecordingEnqueuer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: tests that drive headless Chromium against the served UI")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.browser)


def _driver_path() -> str | None:
    return shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium that keeps its console log (read with `driver.get_log("browser")`)."""
    if not CHROMIUM.exists():
        pytest.skip("headless browser tests need /usr/bin/chromium (apt-get install chromium)")
    driver_path = _driver_path()
    if driver_path is None:
        pytest.skip("headless browser tests need chromedriver (apt-get install chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("headless browser tests need the selenium package (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROME_ARGS, "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class LiveServer:
    base_url: str
    app: Any
    store: JobStore
    artifacts: ArtifactStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """create_app() served by uvicorn in a thread, on a free loopback port, with an empty data dir."""
    data = tmp_path_factory.mktemp("browser-data")
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'parry.db'}", redis_url=DEAD_REDIS)
    app = create_app(settings, enqueuer=RecordingEnqueuer())
    store: JobStore = app.state.store
    store.create_schema()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app, store, app.state.artifacts)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
