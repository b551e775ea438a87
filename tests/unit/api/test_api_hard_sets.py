"""POST /v1/hard-sets: checks against the pool and the surrogates, limits, idempotency, enqueueing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.tasks import RUN_HARD_SET
from tests.unit.api_helpers import (
    Api,
    assert_problem,
    make_api,
    npz_bytes,
    ready_model,
    saved_model_zip,
    upload_model,
)


def _spec(*models: str, pool: str = "builtin:digits", **extra: Any) -> dict[str, Any]:
    return {"pool_dataset_id": pool, "surrogate_model_ids": list(models), **extra}


def _locs(problem: dict[str, object]) -> list[list[object]]:
    errors = problem.get("errors") or []
    assert isinstance(errors, list)
    return [list(e["loc"]) for e in errors]


def _sent(api: Api) -> list[tuple[str, list[str]]]:
    return [sent for sent in api.enqueuer.sent if sent[0] == RUN_HARD_SET]


def _digits_models(api: Api, count: int) -> list[str]:
    return [
        ready_model(api, input_shape=[8, 8, 1], num_classes=10, extra=f"m{i}".encode()) for i in range(count)
    ]


def test_submit_answers_202_with_a_hard_set_job_and_enqueues(api: Api) -> None:
    a, b = _digits_models(api, 2)
    r = api.client.post("/v1/hard-sets", json=_spec(a, b, min_confidence=0.8, name="hard digits"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "hard_set" and job["status"] == "queued"
    assert job["spec"]["surrogate_model_ids"] == [a, b] and job["spec"]["min_confidence"] == 0.8
    assert job["spec"]["batch_size"] == 256 and job["spec"]["input_range"] == [0.0, 1.0]  # defaults filled in
    assert _sent(api) == [(RUN_HARD_SET, [job["id"]])]
    listed = api.client.get("/v1/jobs", params={"kind": "hard_set"}).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert api.client.get(f"/v1/jobs/{job['id']}").json()["kind"] == "hard_set"


def test_min_confidence_defaults_to_one_half(api: Api) -> None:
    (a,) = _digits_models(api, 1)
    r = api.client.post("/v1/hard-sets", json=_spec(a))
    assert r.status_code == 202 and r.json()["spec"]["min_confidence"] == 0.5


def test_the_same_idempotency_key_gives_the_same_job(api: Api) -> None:
    (a,) = _digits_models(api, 1)
    first = api.client.post("/v1/hard-sets", json=_spec(a), headers={"Idempotency-Key": "k"})
    again = api.client.post("/v1/hard-sets", json=_spec(a), headers={"Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert len(_sent(api)) == 1


def test_unknown_pool_and_surrogates_are_404_naming_which(api: Api) -> None:
    (a,) = _digits_models(api, 1)
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a, "mdl_nope")), 404)
    assert "model 'mdl_nope' does not exist" in str(problem["detail"])
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a, pool="dst_nope")), 404)
    assert "dataset 'dst_nope' does not exist" in str(problem["detail"])
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a, pool="builtin:cifar")), 404)
    assert "builtin:cifar" in str(problem["detail"])
    assert _sent(api) == [] and api.store.list_jobs("local")[0] == []


def test_another_owners_model_is_404(tmp_path: Path) -> None:
    keys = {"alice": "k" * 32, "bob": "b" * 32}
    with make_api(tmp_path, api_keys=", ".join(keys.values())) as api:
        alice = {"Authorization": f"Bearer {keys['alice']}"}
        bob = {"Authorization": f"Bearer {keys['bob']}"}
        r = api.client.post("/v1/models", files={"file": ("m.zip", saved_model_zip())}, headers=alice)
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
        assert api.client.post("/v1/hard-sets", json=_spec(model_id), headers=alice).status_code == 202
        problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(model_id), headers=bob), 404)
        assert model_id in str(problem["detail"])


def test_a_rejected_surrogate_is_422_saying_which_and_why(api: Api) -> None:
    (a,) = _digits_models(api, 1)
    _, body = upload_model(api, saved_model_zip(b"bad"))
    api.store.set_model_rejected(str(body["id"]), reason="its graph reads files (ReadFile)")
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a, str(body["id"]))), 422)
    assert "ReadFile" in str(problem["detail"]) and _locs(problem) == [["body", "surrogate_model_ids", 1]]


def test_a_surrogate_that_does_not_fit_the_pool_is_422(api: Api) -> None:
    (digits,) = _digits_models(api, 1)
    mnist = ready_model(api, input_shape=[28, 28, 1], num_classes=10, extra=b"mnist")
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(digits, mnist)), 422)
    assert "shape" in str(problem["detail"]) and mnist in str(problem["detail"])
    three = ready_model(api, input_shape=[8, 8, 1], num_classes=3, extra=b"three")
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(three)), 422)
    assert "labels up to 9" in str(problem["detail"])


def test_a_pool_outside_input_range_is_422(api: Api) -> None:
    model_id = ready_model(api, input_shape=[4], num_classes=3)
    data = npz_bytes(x=np.full((6, 4), 200.0, dtype=np.float32), y=np.arange(6) % 3)
    dataset = api.client.post("/v1/datasets", files={"file": ("d.npz", data)}).json()
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(model_id, pool=dataset["id"])), 422)
    assert _locs(problem) == [["body", "input_range"]]
    r = api.client.post("/v1/hard-sets", json=_spec(model_id, pool=dataset["id"], input_range=[0, 255]))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"min_confidence": 1.5}, ["body", "min_confidence"]),
        ({"min_confidence": -0.1}, ["body", "min_confidence"]),
        ({"surrogate_model_ids": []}, ["body", "surrogate_model_ids"]),
        ({"max_samples": 0}, ["body", "max_samples"]),
        ({"batch_size": 0}, ["body", "batch_size"]),
        ({"input_range": [1, 0]}, ["body", "input_range"]),
        ({"min_confidnce": 0.5}, ["body", "min_confidnce"]),
    ],
)
def test_a_bad_spec_is_422_naming_the_field(api: Api, extra: dict[str, Any], loc: list[object]) -> None:
    (a,) = _digits_models(api, 1)
    problem = assert_problem(api.client.post("/v1/hard-sets", json={**_spec(a), **extra}), 422)
    assert loc in _locs(problem), problem
    assert _sent(api) == []


def test_a_surrogate_named_twice_is_422(api: Api) -> None:
    (a,) = _digits_models(api, 1)
    problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a, a)), 422)
    assert "once" in str(problem["detail"]) or "once" in str(problem)


def test_missing_fields_are_422(api: Api) -> None:
    problem = assert_problem(api.client.post("/v1/hard-sets", json={}), 422)
    assert {("body", "pool_dataset_id"), ("body", "surrogate_model_ids")} <= {
        tuple(x) for x in _locs(problem)
    }


def test_the_job_size_limit_counts_samples_times_surrogates(tmp_path: Path) -> None:
    with make_api(tmp_path, max_gradient_steps_per_job=3000) as api:
        a, b = _digits_models(api, 2)
        # 1,797 digits: one surrogate fits under 3,000 forward passes, two do not.
        assert api.client.post("/v1/hard-sets", json=_spec(a)).status_code == 202
        problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a, b)), 422)
        assert "3,594 forward passes" in str(problem["detail"]) and "max_samples" in str(problem["detail"])
        assert api.client.post("/v1/hard-sets", json=_spec(a, b, max_samples=1000)).status_code == 202
    with make_api(tmp_path / "small", max_samples_per_job=100) as api:
        (a,) = _digits_models(api, 1)
        problem = assert_problem(api.client.post("/v1/hard-sets", json=_spec(a)), 422)
        assert _locs(problem) == [["body", "max_samples"]]
        assert api.client.post("/v1/hard-sets", json=_spec(a, max_samples=100)).status_code == 202


def test_a_finished_hard_set_has_a_json_and_an_html_report_but_no_junit(api: Api) -> None:
    (a,) = _digits_models(api, 1)
    job_id = api.client.post("/v1/hard-sets", json=_spec(a)).json()["id"]
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is not None
    result = {
        "dataset_id": None, "kept": 0, "pool_size": 1797, "min_confidence": 0.5, "per_class_kept": {"0": 0},
        "per_surrogate": [
            {"model_id": a, "model_sha256": "s", "accuracy": 1.0, "misclassified_confident": 0}
        ],
        "pool_dataset_sha256": "p", "message": "no sample was kept",
    }  # fmt: skip
    assert api.store.finish(job_id, worker="w", status="succeeded", result=result)
    assert api.client.get(f"/v1/jobs/{job_id}/report").json() == result
    page = api.client.get(f"/v1/jobs/{job_id}/report", params={"format": "html"})
    assert page.status_code == 200 and job_id in page.text
    assert api.client.get(f"/ui/jobs/{job_id}").status_code in (
        200,
        303,
    )  # the UI page renders (or asks to log in)
    problem = assert_problem(api.client.get(f"/v1/jobs/{job_id}/report", params={"format": "junit"}), 422)
    assert "hard_set job" in str(problem["detail"])
