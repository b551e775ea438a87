"""POST /v1/evaluations: validation against model and dataset, idempotency, enqueueing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.tasks import RUN_EVALUATION
from tests.unit.api_helpers import (
    Api,
    assert_problem,
    make_api,
    npz_bytes,
    ready_model,
    saved_model_zip,
    upload_model,
)


def _spec(model_id: str, dataset_id: str = "builtin:digits:test", **extra: Any) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "dataset_id": dataset_id,
        "attacks": [{"name": "fgsm", "eps": [0.1, 0.2]}],
        **extra,
    }


def test_submit_answers_202_with_location_and_enqueues(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    r = api.client.post("/v1/evaluations", json=_spec(model_id))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["status"] == "queued" and job["kind"] == "evaluation"
    assert job["spec"]["attacks"][0] == {
        "name": "fgsm",
        "eps": [0.1, 0.2],
        "norm": "linf",
        "targeted": False,
        "target": None,
    }
    assert api.enqueuer.sent[-1] == (RUN_EVALUATION, [job["id"]])
    assert api.client.get(job["links"]["self"]).json()["id"] == job["id"]


def test_flattened_input_is_compatible(api: Api) -> None:
    model_id = ready_model(api, input_shape=[64], num_classes=10)
    assert api.client.post("/v1/evaluations", json=_spec(model_id)).status_code == 202


def test_model_still_validating_is_accepted(api: Api) -> None:
    _, body = upload_model(api, saved_model_zip())
    assert api.client.post("/v1/evaluations", json=_spec(str(body["id"]))).status_code == 202


def test_unknown_model_and_dataset_are_404_naming_which(api: Api) -> None:
    problem = assert_problem(api.client.post("/v1/evaluations", json=_spec("mdl_nope")), 404)
    assert "model 'mdl_nope'" in str(problem["detail"])
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    problem = assert_problem(api.client.post("/v1/evaluations", json=_spec(model_id, "dst_nope")), 404)
    assert "dataset 'dst_nope'" in str(problem["detail"])
    assert_problem(api.client.post("/v1/evaluations", json=_spec(model_id, "builtin:nope")), 404)
    assert api.store.list_jobs("local")[0] == []


def test_rejected_model_is_422_saying_why(api: Api) -> None:
    _, body = upload_model(api, saved_model_zip())
    api.store.set_model_rejected(str(body["id"]), reason="its graph reads files (ReadFile)")
    problem = assert_problem(api.client.post("/v1/evaluations", json=_spec(str(body["id"]))), 422)
    assert "rejected" in str(problem["detail"]) and "ReadFile" in str(problem["detail"])


def test_incompatible_shape_labels_and_target_are_422(api: Api) -> None:
    wrong_shape = ready_model(api, input_shape=[28, 28, 1], num_classes=10, extra=b"a")
    problem = assert_problem(api.client.post("/v1/evaluations", json=_spec(wrong_shape)), 422)
    assert "[28, 28, 1]" in str(problem["detail"]) and "[8, 8, 1]" in str(problem["detail"])
    few_classes = ready_model(api, input_shape=[8, 8, 1], num_classes=5, extra=b"b")
    problem = assert_problem(api.client.post("/v1/evaluations", json=_spec(few_classes)), 422)
    assert "labels up to 9" in str(problem["detail"])
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10, extra=b"c")
    spec = _spec(model_id, attacks=[{"name": "pgd", "eps": 0.1, "targeted": True, "target": 12}])
    problem = assert_problem(api.client.post("/v1/evaluations", json=spec), 422)
    assert problem["errors"] == [{"loc": ["body", "attacks", 0, "target"], "msg": "below 10"}]


def test_uploaded_dataset_is_checked_too(api: Api) -> None:
    r = api.client.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes(x=np.zeros((4, 3)), y=np.array([0, 1, 2, 3])))}
    )
    model_id = ready_model(api, input_shape=[3], num_classes=4)
    assert api.client.post("/v1/evaluations", json=_spec(model_id, r.json()["id"])).status_code == 202


def test_max_samples_over_the_limit_is_422(tmp_path: Path) -> None:
    with make_api(tmp_path, max_samples_per_job=100) as api:
        model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
        problem = assert_problem(api.client.post("/v1/evaluations", json=_spec(model_id)), 422)
        assert "max_samples" in str(problem["detail"])
        assert api.client.post("/v1/evaluations", json=_spec(model_id, max_samples=100)).status_code == 202


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"attacks": [{"name": "pgd", "eps": 0.3, "stpes": 10}]}, ["body", "attacks", 0, "stpes"]),
        ({"attacks": [{"name": "deepfool", "eps": 0.3}]}, ["body", "attacks", 0]),
        ({"attacks": [{"name": "fgsm", "eps": -1}]}, ["body", "attacks", 0, "eps"]),
        ({"attacks": []}, ["body", "attacks"]),
        ({"batch_size": 0}, ["body", "batch_size"]),
        ({"input_range": [1, 0]}, ["body", "input_range"]),
        ({"colour": "red"}, ["body", "colour"]),
    ],
)
def test_bad_spec_is_422_naming_the_field(api: Api, change: dict[str, Any], loc: list[Any]) -> None:
    spec = {**_spec("mdl_x"), **change}
    problem = assert_problem(api.client.post("/v1/evaluations", json=spec), 422)
    errors = problem["errors"]
    assert isinstance(errors, list) and errors
    assert errors[0]["loc"] == loc, errors
    assert str(loc[-1]) in str(problem["detail"]) or loc[-1] == 0


def test_not_json_is_422(api: Api) -> None:
    r = api.client.post("/v1/evaluations", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 422)


def test_idempotency_key_returns_the_first_job(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    first = api.client.post("/v1/evaluations", json=_spec(model_id), headers={"Idempotency-Key": "abc"})
    second = api.client.post("/v1/evaluations", json=_spec(model_id), headers={"Idempotency-Key": "abc"})
    other = api.client.post("/v1/evaluations", json=_spec(model_id), headers={"Idempotency-Key": "xyz"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] != other.json()["id"]
    assert second.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    assert [args[0] for _, args in api.enqueuer.sent if _ == RUN_EVALUATION] == [
        first.json()["id"],
        other.json()["id"],
    ]


def test_broker_down_still_answers_202_and_the_job_stays_queued(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    api.enqueuer.fail = True
    r = api.client.post("/v1/evaluations", json=_spec(model_id))
    assert r.status_code == 202
    assert api.store.get_job(r.json()["id"]).status == "queued"


def test_autoattack_is_accepted_and_a_targeted_one_is_a_sentence(api: Api, small_autoattack: Any) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    body = {"model_id": model_id, "dataset_id": "builtin:digits:test"}
    auto = {"name": "autoattack", "eps": [0.1, 0.2], "version": "fast"}
    thresholds = [{"metric": "worst_case.linf.0.2", "min": 0.5}]
    assert (
        api.client.post(
            "/v1/evaluations", json={**body, "attacks": [auto], "thresholds": thresholds}
        ).status_code
        == 202
    )
    problem = assert_problem(
        api.client.post("/v1/evaluations", json={**body, "attacks": [{**auto, "targeted": True}]}), 422
    )
    assert "autoattack is untargeted" in json.dumps(problem)


def test_corruptions_are_accepted_and_unknown_names_are_422_listing_the_known(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    r = api.client.post("/v1/evaluations", json=_spec(model_id, corruptions={"names": "all"}))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["corruptions"] == {"names": "all", "severities": [1, 2, 3, 4, 5]}
    bad = _spec(model_id, corruptions={"names": ["gaussian_noise", "fog"], "severities": [1]})
    problem = assert_problem(api.client.post("/v1/evaluations", json=bad), 422)
    assert "unknown corruption fog; known: gaussian_noise, shot_noise" in json.dumps(problem)
    bad = _spec(model_id, corruptions={"severities": [0, 3]})
    assert "severity 0 is outside 1 to 5" in json.dumps(
        assert_problem(api.client.post("/v1/evaluations", json=bad), 422)
    )
