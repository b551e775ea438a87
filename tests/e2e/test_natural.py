"""Issue 17 end to end: a label-less OOD upload and an evaluation without attacks, through a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import load_builtin
from tests.e2e.conftest import Service, one_database

pytestmark = one_database


@pytest.fixture(scope="session")
def upscaled_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 8x8 digits blown up to 28x28 (each pixel a 3x3 block, padded by 2), saved with x only."""
    digits = load_builtin("builtin:digits:test").x[:100, :, :, 0]
    x = np.pad(np.kron(digits, np.ones((3, 3), np.float32)), ((0, 0), (2, 2), (2, 2)))[..., None]
    path = tmp_path_factory.mktemp("e2e-ood") / "digits28.npz"
    np.savez(path, x=x.astype(np.float32))
    return path


def test_ood_and_calibration_without_attacks(
    service: Service, e2e_files: dict[str, Path], upscaled_digits: Path
) -> None:
    model = service.upload_model(e2e_files["keras"], name="cnn-natural")
    assert model.status_code in (200, 201), model.text
    model_id = service.wait_model(model.json()["id"])["id"]
    upload = service.upload_dataset(upscaled_digits)
    assert upload.status_code in (200, 201), upload.text
    ood = upload.json()
    assert (ood["num_classes"], ood["labelled"], ood["sample_shape"]) == (0, False, [28, 28, 1])
    refused = service.submit({"model_id": model_id, "dataset_id": ood["id"], "attacks": []})
    assert refused.status_code == 422
    spec: dict[str, Any] = {
        "model_id": model_id,
        "dataset_id": "builtin:mnist-5k:test",
        "max_samples": 100,
        "ood": {"dataset_id": ood["id"]},
        "thresholds": [{"metric": "calibration.ece", "max": 0.5}, {"metric": "ood.msp.auroc", "min": 0.0}],
        "no_cache": True,
    }
    submitted = service.submit(spec)
    assert submitted.status_code == 202, submitted.text
    job = service.wait_job(submitted.json()["id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["attacks"] == [] and result["worst_case"] == [] and result["num_samples"] == 100
    assert result["ood_dataset_sha256"] == ood["sha256"]
    assert [row["score"] for row in result["ood"]] == ["msp", "max_logit", "energy"]
    for row in result["ood"]:
        assert 0.0 <= row["fpr_at_95_tpr"] <= 1.0 and (row["num_in"], row["num_out"]) == (100, 100)
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["aupr_in"] <= 1.0
        assert sum(row["histogram"]["in_distribution"]) == 100 == sum(row["histogram"]["out_of_distribution"])
    # Digits blown up to 28x28 are no MNIST digits to the CNN: some score must tell them apart.
    assert max(row["auroc"] for row in result["ood"]) > 0.5
    calibration = result["calibration"]
    assert 0.0 <= calibration["ece"] < 0.5 and sum(b["count"] for b in calibration["bins"]) == 100
    with service.client() as client:
        page = client.get(f"/ui/jobs/{job['id']}")
        assert page.status_code == 200 and "Reliability diagram" in page.text and "ROC" in page.text
        junit = client.get(f"/v1/jobs/{job['id']}/report", params={"format": "junit"})
        assert junit.status_code == 200 and 'failures="0"' in junit.text and "ood.energy.auroc" in junit.text
