"""Label-less uploads, OOD evaluations and evaluations without attacks, at the API."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.unit.api_helpers import Api, assert_problem, npz_bytes, ready_model


def _upload(api: Api, **arrays: np.ndarray) -> dict[str, Any]:
    r = api.client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**arrays))})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _ood_spec(model_id: str, ood_id: str, **extra: Any) -> dict[str, Any]:
    return {"model_id": model_id, "dataset_id": "builtin:digits:test", "ood": {"dataset_id": ood_id}, **extra}


def test_x_only_upload_is_a_dataset_without_labels(api: Api) -> None:
    body = _upload(api, x=np.zeros((5, 8, 8, 1), np.float32))
    assert (body["num_samples"], body["num_classes"], body["labelled"]) == (5, 0, False)
    assert api.client.get(f"/v1/datasets/{body['id']}").json()["labelled"] is False
    builtin = api.client.get("/v1/datasets/builtin:digits").json()
    assert builtin["labelled"] is True


def test_a_dataset_without_labels_cannot_be_evaluated_nor_trained_on(api: Api) -> None:
    unlabelled = _upload(api, x=np.zeros((5, 8, 8, 1), np.float32))["id"]
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    spec = {"model_id": model_id, "dataset_id": unlabelled, "attacks": [{"name": "fgsm", "eps": 0.1}]}
    problem = assert_problem(api.client.post("/v1/evaluations", json=spec), 422)
    assert "has no labels" in str(problem["detail"]) and "ood.dataset_id" in str(problem["detail"])
    assert problem["errors"] == [{"loc": ["body", "dataset_id"], "msg": "needs a dataset with labels (y)"}]
    training = {"model_id": model_id, "dataset_id": unlabelled, "method": "pgd", "eps": 0.1}
    problem = assert_problem(api.client.post("/v1/trainings", json=training), 422)
    assert "has no labels" in str(problem["detail"])
    assert api.store.list_jobs("local")[0] == []


def test_an_ood_evaluation_needs_no_attacks(api: Api) -> None:
    ood = _upload(api, x=np.random.default_rng(0).random((7, 8, 8, 1)).astype(np.float32))["id"]
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    r = api.client.post("/v1/evaluations", json=_ood_spec(model_id, ood))
    assert r.status_code == 202, r.text
    spec = r.json()["spec"]
    assert spec["attacks"] == [] and spec["ood"] == {
        "dataset_id": ood,
        "scores": ["msp", "max_logit", "energy"],
    }


def test_a_corruptions_evaluation_needs_no_attacks(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    body = {"model_id": model_id, "dataset_id": "builtin:digits", "corruptions": {"names": ["contrast"]}}
    r = api.client.post("/v1/evaluations", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["attacks"] == [] and r.json()["spec"]["corruptions"]["names"] == ["contrast"]


def test_no_attacks_and_no_ood_is_422_with_a_sentence(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    for body in ({"model_id": model_id, "dataset_id": "builtin:digits"}, {"model_id": model_id,
                 "dataset_id": "builtin:digits", "attacks": []}):  # fmt: skip
        problem = assert_problem(api.client.post("/v1/evaluations", json=body), 422)
        assert "at least one attack, or ood" in str(problem["detail"])
        assert problem["errors"][0]["loc"] == ["body", "attacks"]  # type: ignore[index]


def test_ood_shape_range_and_existence_are_checked(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    wrong = _upload(api, x=np.zeros((3, 28, 28, 1), np.float32))["id"]
    problem = assert_problem(api.client.post("/v1/evaluations", json=_ood_spec(model_id, wrong)), 422)
    assert "[28, 28, 1]" in str(problem["detail"]) and "shape" in str(problem["detail"])
    assert problem["errors"] == [{"loc": ["body", "ood", "dataset_id"], "msg": "sample shape differs"}]
    big = _upload(api, x=np.full((3, 8, 8, 1), 255.0, np.float32))["id"]
    problem = assert_problem(api.client.post("/v1/evaluations", json=_ood_spec(model_id, big)), 422)
    assert "outside input_range" in str(problem["detail"])
    problem = assert_problem(api.client.post("/v1/evaluations", json=_ood_spec(model_id, "dst_nope")), 404)
    assert "ood dataset 'dst_nope'" in str(problem["detail"])
    # A built-in may be the OOD set too; a labelled upload's labels are ignored.
    assert api.client.post("/v1/evaluations", json=_ood_spec(model_id, "builtin:digits")).status_code == 202


def test_ood_scores_are_checked(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    spec = _ood_spec(model_id, "builtin:digits")
    for scores, says in ((["msp", "msp"], "once"), (["odin"], "msp"), ([], "at least 1")):
        spec["ood"]["scores"] = scores
        problem = assert_problem(api.client.post("/v1/evaluations", json=spec), 422)
        assert says in str(problem["detail"]), problem


def test_the_ood_set_is_in_the_reuse_key_by_its_bytes(api: Api) -> None:
    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=10)
    one = _upload(api, x=np.zeros((3, 8, 8, 1), np.float32))["id"]
    other = _upload(api, x=np.ones((3, 8, 8, 1), np.float32))["id"]
    keys = set()
    for ood in (one, other):
        r = api.client.post("/v1/evaluations", json=_ood_spec(model_id, ood))
        keys.add(api.store.get_job(r.json()["id"]).cache_key)
    r = api.client.post("/v1/evaluations", json=_ood_spec(model_id, one))
    assert len(keys) == 2 and api.store.get_job(r.json()["id"]).cache_key in keys
