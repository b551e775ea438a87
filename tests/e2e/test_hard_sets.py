"""Issue 17 item 4 end to end: a hard-set job through the API and a real worker, then evaluations on the
new dataset. SQLite only: the store's part is the one every job kind shares (test_service.py covers both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Service, one_database
from tests.modelzoo import digits_softmax_file

pytestmark = one_database


def _ready(service: Service, path: Path) -> dict[str, Any]:
    response = service.upload_model(path)
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready", model
    return model


def _evaluate(service: Service, model_id: str, dataset_id: str) -> dict[str, Any]:
    spec = {"model_id": model_id, "dataset_id": dataset_id, "attacks": [{"name": "fgsm", "eps": 0.1}]}
    response = service.submit(spec)
    assert response.status_code == 202, response.text
    done = service.wait_job(response.json()["id"])
    assert done["status"] == "succeeded", done
    result: dict[str, Any] = done["result"]
    return result


def test_a_hard_set_becomes_a_dataset_a_target_model_is_evaluated_on(
    service: Service, digits_keras: Path, tmp_path: Path
) -> None:
    surrogate = _ready(service, digits_keras)
    target = _ready(service, digits_softmax_file(tmp_path / "target.keras", seed=2))
    # Threshold 0: every mistake of this weak, unsure surrogate is kept (the threshold has its unit test).
    spec = {
        "pool_dataset_id": "builtin:digits",
        "surrogate_model_ids": [surrogate["id"]],
        "min_confidence": 0.0,
    }
    with service.client() as client:
        response = client.post("/v1/hard-sets", json=spec)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "hard_set" and response.headers["location"] == f"/v1/jobs/{job['id']}"
    done = service.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert (
        result["pool_size"] == 1797
        and 0 < result["kept"] == result["per_surrogate"][0]["misclassified_confident"]
    )
    assert sum(result["per_class_kept"].values()) == result["kept"]

    with service.client() as client:
        dataset = client.get(f"/v1/datasets/{result['dataset_id']}").json()
        artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert dataset["num_samples"] == result["kept"] and dataset["sample_shape"] == [8, 8, 1]
    assert {"report.json", "hard_set.npz"} <= {a["name"] for a in artifacts}

    # The surrogate gets every kept sample wrong, by construction; the target is measured on the same set.
    assert _evaluate(service, surrogate["id"], result["dataset_id"])["clean_accuracy"] == 0.0
    measured = _evaluate(service, target["id"], result["dataset_id"])
    assert measured["num_samples"] == result["kept"]
    assert set(measured["per_class_clean_accuracy"]) == {c for c, n in result["per_class_kept"].items() if n}
