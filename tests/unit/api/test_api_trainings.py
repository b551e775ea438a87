"""POST /v1/trainings: checks against the model and the datasets, idempotency, enqueueing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.tasks import RUN_TRAINING
from tests.unit.api_helpers import (
    Api,
    assert_problem,
    npz_bytes,
    ready_model,
    saved_model_zip,
    upload_model,
)


def _spec(model_id: str, dataset_id: str = "builtin:digits:train", **extra: Any) -> dict[str, Any]:
    return {"model_id": model_id, "dataset_id": dataset_id, "method": "fgsm-rs", "eps": 0.1, **extra}


def _errors(problem: dict[str, object]) -> list[list[object]]:
    errors = problem.get("errors") or []
    assert isinstance(errors, list)
    return [list(e["loc"]) for e in errors]


def _trainings(api: Api) -> list[tuple[str, list[str]]]:
    return [sent for sent in api.enqueuer.sent if sent[0] == RUN_TRAINING]


def test_submit_answers_202_with_location_and_enqueues(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    spec = _spec(
        model_id,
        validation_dataset_id="builtin:digits:test",
        evaluate=[{"name": "pgd", "eps": 0.1, "steps": 5}],
    )
    r = api.client.post("/v1/trainings", json=spec)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["status"] == "queued" and job["kind"] == "training"
    assert job["spec"]["method"] == "fgsm-rs" and job["spec"]["epochs"] == 10  # defaults filled in
    assert job["spec"]["evaluate"][0]["steps"] == 5
    assert api.enqueuer.sent[-1] == (RUN_TRAINING, [job["id"]])
    listed = api.client.get("/v1/jobs", params={"kind": "training"}).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_model_still_validating_is_accepted(api: Api) -> None:
    _, body = upload_model(api, saved_model_zip())
    assert api.client.post("/v1/trainings", json=_spec(str(body["id"]))).status_code == 202


def test_the_same_idempotency_key_gives_the_same_job(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    first = api.client.post("/v1/trainings", json=_spec(model_id), headers={"Idempotency-Key": "k1"})
    again = api.client.post("/v1/trainings", json=_spec(model_id), headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202 and again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["location"] == first.headers["location"]
    assert len(_trainings(api)) == 1
    other = api.client.post("/v1/trainings", json=_spec(model_id), headers={"Idempotency-Key": "k2"})
    assert other.json()["id"] != first.json()["id"]


def test_unknown_model_and_datasets_are_404_naming_which(api: Api) -> None:
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec("mdl_nope")), 404)
    assert "model 'mdl_nope'" in str(problem["detail"])
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec(model_id, "dst_nope")), 404)
    assert "dataset 'dst_nope'" in str(problem["detail"])
    spec = _spec(model_id, validation_dataset_id="builtin:nope")
    problem = assert_problem(api.client.post("/v1/trainings", json=spec), 404)
    assert str(problem["detail"]).startswith("validation dataset 'builtin:nope'")
    assert api.store.list_jobs("local")[0] == [] and _trainings(api) == []


def test_an_untrainable_model_is_refused_at_submission(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    api.store.set_model_ready(
        model_id, input_shape=[8, 8, 1], num_classes=10, output="logits", trainable=False
    )
    assert api.client.get(f"/v1/models/{model_id}").json()["trainable"] is False
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec(model_id)), 422)
    assert "cannot be trained" in str(problem["detail"]) and "no trainable variables" in str(
        problem["detail"]
    )
    assert _errors(problem) == [["body", "model_id"]]
    assert _trainings(api) == []


def test_rejected_model_is_422_saying_why(api: Api) -> None:
    _, body = upload_model(api, saved_model_zip())
    api.store.set_model_rejected(str(body["id"]), reason="its graph reads files (ReadFile)")
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec(str(body["id"]))), 422)
    assert "ReadFile" in str(problem["detail"])


def test_shape_and_label_mismatches_are_422(api: Api) -> None:
    mnist_model = ready_model(api, input_shape=[28, 28, 1], num_classes=10)
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec(mnist_model)), 422)
    assert "shape" in str(problem["detail"])
    # The validation dataset is checked too.
    digits_model = ready_model(api, input_shape=[8, 8, 1], num_classes=10, extra=b"digits")
    spec = _spec(digits_model, validation_dataset_id="builtin:mnist-5k:test")
    assert "builtin:mnist-5k:test" in str(
        assert_problem(api.client.post("/v1/trainings", json=spec), 422)["detail"]
    )
    three_classes = ready_model(api, input_shape=[8, 8, 1], num_classes=3, extra=b"three")
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec(three_classes)), 422)
    assert "labels up to 9" in str(problem["detail"])
    targeted = [{"name": "fgsm", "eps": 0.1, "targeted": True, "target": 12}]
    problem = assert_problem(
        api.client.post("/v1/trainings", json=_spec(digits_model, evaluate=targeted)), 422
    )
    assert _errors(problem) == [["body", "evaluate", 0, "target"]]


def test_uploaded_datasets_are_accepted(api: Api) -> None:
    model_id = ready_model(api, input_shape=[4], num_classes=3)
    rng = np.random.default_rng(0)
    data = npz_bytes(x=rng.random((20, 4), dtype=np.float32), y=np.arange(20) % 3)
    dataset = api.client.post("/v1/datasets", files={"file": ("d.npz", data)}).json()
    r = api.client.post(
        "/v1/trainings", json=_spec(model_id, dataset["id"], validation_dataset_id=dataset["id"])
    )
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"method": "free"}, ["body", "method"]),
        ({"eps": 0}, ["body", "eps"]),
        ({"epochs": 0}, ["body", "epochs"]),
        ({"stpes": 3}, ["body", "stpes"]),
        ({"evaluate": [{"name": "pgd", "eps": 0.1, "stpes": 4}]}, ["body", "evaluate", 0, "stpes"]),
        ({"input_range": [1, 0]}, ["body", "input_range"]),
    ],
)
def test_a_bad_spec_is_422_naming_the_field(api: Api, extra: dict[str, Any], loc: list[object]) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    problem = assert_problem(api.client.post("/v1/trainings", json=_spec(model_id, **extra)), 422)
    assert loc in _errors(problem), problem
    assert _trainings(api) == []


def test_fgsm_start_belongs_to_fgsm_rs(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    problem = assert_problem(
        api.client.post("/v1/trainings", json=_spec(model_id, method="pgd", fgsm_start="previous")), 422
    )
    assert "fgsm_start is only used by method fgsm-rs" in str(problem), problem
    accepted = api.client.post("/v1/trainings", json=_spec(model_id, fgsm_start="previous"))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["spec"]["fgsm_start"] == "previous"


def test_missing_fields_are_422(api: Api) -> None:
    problem = assert_problem(api.client.post("/v1/trainings", json={"model_id": "mdl_x"}), 422)
    assert {("body", f) for f in ("dataset_id", "method", "eps")} <= {tuple(loc) for loc in _errors(problem)}


def test_a_broker_outage_leaves_the_job_queued(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    api.enqueuer.fail = True
    r = api.client.post("/v1/trainings", json=_spec(model_id))
    assert r.status_code == 202 and api.store.get_job(r.json()["id"]).status == "queued"
