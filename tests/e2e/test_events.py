"""Live job events end to end: the SSE stream and the long poll of the real API while a real worker runs the
job, and `parry wait`'s transport (ParryClient.wait_job) following the stream; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from service.cli.client import ParryClient
from tests.e2e.conftest import Service, one_database

pytestmark = one_database

SMALL = {
    "dataset_id": "builtin:mnist-5k:test",
    "attacks": [{"name": "pgd", "eps": [0.1, 0.2], "steps": 10}],
    "max_samples": 300,
    "batch_size": 50,
    "no_cache": True,
}
# Minutes of work in small batches, so that a cancel lands between two of them.
LONG = {
    "dataset_id": "builtin:mnist-5k",
    "attacks": [{"name": "pgd", "eps": 0.01, "steps": 10, "restarts": 50}],
    "batch_size": 16,
    "no_cache": True,
}


@pytest.fixture(scope="module")
def model_id(service: Service, e2e_files: dict[str, Path]) -> str:
    response = service.upload_model(e2e_files["keras"], name="cnn-events")
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready", model
    return str(model["id"])


def _stream(service: Service, job_id: str, into: list[tuple[str, dict[str, Any]]]) -> threading.Thread:
    """Read the job's SSE stream on a thread until it closes, keeping (event, data) pairs."""

    def read() -> None:
        name = ""
        with service.client(timeout=120) as client, client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    into.append((name, json.loads(line[6:])))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_events_follow_a_real_evaluation_to_its_result(service: Service, model_id: str) -> None:
    job = service.submit({"model_id": model_id, **SMALL}).json()
    events: list[tuple[str, dict[str, Any]]] = []
    reader = _stream(service, job["id"], events)
    with service.client(timeout=60) as client:
        polled = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
    reader.join(timeout=180)
    assert not reader.is_alive(), f"the stream did not end: {events}\n{service.log_tails()}"
    # The long poll answered with a status other than the one the job had when it was asked.
    assert polled["status"] in ("running", "succeeded"), polled
    names = [name for name, _ in events]
    statuses = [data["status"] for name, data in events if name == "status"]
    assert statuses[-1] == "succeeded" and set(statuses) <= {"queued", "running", "succeeded"}
    assert "progress" in names, names  # the worker's progress reports reach the stream as they happen
    fractions = [d["progress"]["fraction"] for n, d in events if n == "progress" and d["progress"]]
    # The worker's last report (done, 1.0) may reach the stream before the terminal status or not.
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    name, end = events[-1]
    assert name == "end" and end["status"] == "succeeded"
    with service.client() as client:
        report = client.get(end["links"]["report"])
    assert report.status_code == 200 and report.json()["num_samples"] == 300


def test_parry_wait_follows_the_stream_and_a_cancel_ends_it(service: Service, model_id: str) -> None:
    job = service.submit({"model_id": model_id, **LONG}).json()
    updates: list[dict[str, Any]] = []
    client = ParryClient(service.base_url, retries=1)

    def cancel_once_running(update: dict[str, Any]) -> None:
        if (
            update["status"] == "running"
            and update.get("progress")
            and not any(u.get("progress") for u in updates)
        ):
            client.cancel_job(job["id"])
        updates.append(update)

    with client:
        final = client.wait_job(job["id"], timeout=180, on_update=cancel_once_running)
    assert final["status"] == "cancelled", f"{final}\n{service.log_tails()}"
    # The updates before the end came from the event stream (its events carry no spec), not from polls.
    assert updates[0].get("spec") is None and updates[0]["status"] in ("queued", "running")
    assert updates[-1]["status"] == "cancelled" and "spec" in updates[-1]
