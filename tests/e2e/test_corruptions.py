"""Common corruptions end to end: the real API and a real worker score a model under corruptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Service, one_database

pytestmark = one_database

SPEC = {
    "dataset_id": "builtin:mnist-5k:test",
    "attacks": [{"name": "fgsm", "eps": 0.1}],
    "max_samples": 64,
    "corruptions": {"names": ["impulse_noise", "contrast"], "severities": [1, 5]},
    "thresholds": [{"metric": "corruptions.contrast.1", "min": 0.5}],
    "no_cache": True,
}


@pytest.fixture(scope="module")
def model_id(service: Service, e2e_files: dict[str, Path]) -> str:
    response = service.upload_model(e2e_files["keras"], name="cnn-corruptions")
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready", model
    return str(model["id"])


def test_an_evaluation_with_corruptions_reports_them_and_judges_their_bars(
    service: Service, model_id: str
) -> None:
    first = service.submit({"model_id": model_id, **SPEC})
    assert first.status_code == 202, first.text
    job = service.wait_job(first.json()["id"])
    assert job["status"] == "succeeded", job
    corruptions = job["result"]["corruptions"]
    assert [(i["name"], i["severity"]) for i in corruptions["items"]] == [
        ("impulse_noise", 1), ("impulse_noise", 5), ("contrast", 1), ("contrast", 5),
    ]  # fmt: skip
    assert 0 <= corruptions["mean_accuracy"] <= 1
    # The same seed gives the same figures on a second run.
    again = service.wait_job(service.submit({"model_id": model_id, **SPEC}).json()["id"])
    assert again["result"]["corruptions"] == corruptions
    with service.client() as client:
        report = client.get(f"/v1/jobs/{job['id']}/report", params={"format": "markdown"})
    assert report.status_code == 200 and "contrast severity 1" in report.text
    assert "Common corruptions: mean accuracy" in report.text
