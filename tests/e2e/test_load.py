"""A short bounded load on loopback (bench/load.py): 20 clients submit and poll for 15 s with zero errors.

Latency is printed, not asserted (the machine is shared); errors are: a connection error, a timeout, a
5xx or any unexpected status, and a job that does not succeed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.load import run_load
from tests.e2e.conftest import Service


def test_twenty_clients_for_fifteen_seconds_see_no_error(
    service: Service, e2e_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    response = service.upload_model(e2e_files["keras"], name="cnn-keras")
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready", model

    report = asyncio.run(run_load(service.base_url, model["id"], clients=20, seconds=15, drain_s=60))
    store = "postgres" if "PARRY_DATABASE_URL" in service.env else "sqlite"
    with capsys.disabled():
        print(f"\nload, {store}:\n{report.summary()}")  # noqa: T201
    assert report.errors == [], report.summary()
    assert report.jobs["succeeded"] >= 20 and set(report.jobs) == {"succeeded"}, report.summary()
    assert len(report.latencies["poll"]) >= sum(report.jobs.values())  # every job was read back
