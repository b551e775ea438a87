"""POST/GET/DELETE /v1/datasets and the built-in datasets."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.unit.api_helpers import Api, assert_problem, npz_bytes


def _post(api: Api, data: bytes, filename: str = "d.npz", **fields: str):  # type: ignore[no-untyped-def]
    return api.client.post("/v1/datasets", files={"file": (filename, data)}, data=fields)


def test_upload_good_npz_then_same_bytes(api: Api) -> None:
    x = np.random.default_rng(0).random((6, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    data = npz_bytes(x=x, y=y)
    r = _post(api, data, "small.npz")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("dst_") and body["name"] == "small"
    assert (body["num_samples"], body["sample_shape"], body["num_classes"]) == (6, [4, 4, 1], 3)
    assert r.headers["location"] == f"/v1/datasets/{body['id']}"
    again = _post(api, data, "other.npz", name="x")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert api.client.get(f"/v1/datasets/{body['id']}").json() == body
    assert api.client.delete(f"/v1/datasets/{body['id']}").status_code == 204
    assert_problem(api.client.get(f"/v1/datasets/{body['id']}"), 404)


def test_one_hot_labels(api: Api) -> None:
    r = _post(api, npz_bytes(x=np.zeros((3, 2)), y=np.eye(3)))
    assert r.status_code == 201 and r.json()["num_classes"] == 3


def test_pickled_npz_is_refused(api: Api) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.array([0, 1]))
    problem = assert_problem(_post(api, buf.getvalue()), 422)
    assert "pickle" in str(problem["detail"])
    assert list((api.settings.data_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"x": np.array([[np.nan, 1.0], [0.0, 1.0]]), "y": np.array([0, 1])}, "NaN"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "non-negative"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1])}, "integers"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "2 labels"),
        ({"a": np.zeros((3, 2))}, "an array 'x'"),
    ],
)
def test_bad_arrays_are_422_with_the_reason(api: Api, arrays: dict[str, np.ndarray], words: str) -> None:
    problem = assert_problem(_post(api, npz_bytes(**arrays)), 422)
    assert words in str(problem["detail"])
    assert api.store.list_datasets("local") == []


def test_not_an_npz_is_422(api: Api) -> None:
    problem = assert_problem(_post(api, b"hello, world", "d.npz"), 422)
    assert "d.npz" in str(problem["detail"]) and ".upload" not in str(problem["detail"])


def test_builtins_are_listed_and_gettable(api: Api) -> None:
    items = {d["id"]: d for d in api.client.get("/v1/datasets").json()["items"]}
    assert {"builtin:mnist-5k", "builtin:mnist-5k:train", "builtin:mnist-5k:test", "builtin:digits"} <= set(
        items
    )
    mnist = api.client.get("/v1/datasets/builtin:mnist-5k:test").json()
    assert (mnist["num_samples"], mnist["sample_shape"], mnist["num_classes"]) == (1000, [28, 28, 1], 10)
    assert mnist["builtin"] is True and mnist["created_at"] is None
    digits = api.client.get("/v1/datasets/builtin:digits").json()
    assert digits["num_samples"] == 1797 and digits["sample_shape"] == [8, 8, 1]
    problem = assert_problem(api.client.get("/v1/datasets/builtin:cifar"), 404)
    assert "builtin:cifar" in str(problem["detail"])
    assert_problem(api.client.delete("/v1/datasets/builtin:digits"), 422)


def test_an_upload_keeps_its_value_range_and_a_submission_outside_it_is_422(api: Api) -> None:
    from tests.unit.api_helpers import ready_model

    x = np.linspace(0, 255, 6 * 16, dtype=np.float32).reshape(6, 4, 4, 1)  # a [0, 255] dataset
    body = _post(api, npz_bytes(x=x, y=np.array([0, 1, 2, 0, 1, 2]))).json()
    assert (body["min_value"], body["max_value"]) == (0.0, 255.0)
    model_id = ready_model(api, input_shape=[4, 4, 1], num_classes=3)
    spec = {"model_id": model_id, "dataset_id": body["id"], "attacks": [{"name": "fgsm", "eps": 0.1}]}
    problem = assert_problem(api.client.post("/v1/evaluations", json=spec), 422)
    assert "outside input_range [0, 1]" in str(problem["detail"]) and body["id"] in str(problem["detail"])
    assert problem["errors"][0]["loc"] == ["body", "input_range"]  # type: ignore[index]
    assert api.client.post("/v1/evaluations", json={**spec, "input_range": [0, 255]}).status_code == 202
    training = {"model_id": model_id, "dataset_id": body["id"], "method": "fgsm-rs", "eps": 0.1, "epochs": 1}
    assert_problem(api.client.post("/v1/trainings", json=training), 422)
    # Built-ins are delivered in any input_range, so they are never refused for it.
    builtin = api.client.get("/v1/datasets/builtin:digits:test").json()
    assert builtin["min_value"] is None and builtin["max_value"] is None
