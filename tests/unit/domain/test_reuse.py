"""Result reuse (service/domain/reuse.py, the store, POST /v1/evaluations) and the `sha256` list filters."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from service.domain.reuse import evaluation_cache_key
from service.domain.specs import EvaluationOptions
from service.domain.tasks import RUN_EVALUATION
from tests.unit.api_helpers import Api, assert_problem, npz_bytes, ready_model
from tests.unit.check_helpers import fake_result

ATTACKS = [{"name": "pgd", "eps": 0.1, "steps": 5}]


@pytest.fixture
def ids(api: Api) -> tuple[str, str]:
    model_id = ready_model(api, input_shape=[4], num_classes=3)
    data = npz_bytes(x=np.zeros((10, 4), np.float32), y=np.arange(10) % 3)
    dataset = api.client.post("/v1/datasets", files={"file": ("d.npz", data)}).json()
    return model_id, str(dataset["id"])


def _spec(ids: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"model_id": ids[0], "dataset_id": ids[1], "attacks": ATTACKS, **extra}


def _submit(api: Api, spec: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    response = api.client.post("/v1/evaluations", json=spec, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _run(api: Api, job_id: str, **result_kw: Any) -> dict[str, Any]:
    """What a worker would do: claim, write an artifact, finish with a result."""
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is not None
    from service.store.artifacts import ArtifactStore

    ArtifactStore(api.settings.data_dir).write_job_artifact(job_id, "report.json", b'{"x": 1}')
    result = fake_result(ATTACKS, **result_kw).model_dump(mode="json")
    assert api.store.finish(job_id, worker="w", status="succeeded", result=result)
    return result


def test_an_identical_evaluation_is_answered_with_the_earlier_result(api: Api, ids: tuple[str, str]) -> None:
    first = _submit(api, _spec(ids))
    assert first["reused_from"] is None and first["status"] == "queued"
    result = _run(api, first["id"])
    sent = len(api.enqueuer.sent)
    # Defaults written out, thresholds and a callback added: the same evaluation all the same.
    again = _submit(
        api,
        _spec(
            ids,
            attacks=[{**ATTACKS[0], "norm": "linf", "restarts": 1}],
            batch_size=256,
            thresholds=[{"attack": 0, "min_robust_accuracy": 0.5}],
        ),
    )
    assert again["id"] != first["id"] and again["status"] == "succeeded"
    assert again["reused_from"] == first["id"] and again["result"] == result
    assert again["progress"]["fraction"] == 1.0 and again["finished_at"] is not None
    assert len(api.enqueuer.sent) == sent  # nothing to run
    artifacts = api.client.get(f"/v1/jobs/{again['id']}/artifacts").json()
    assert [a["name"] for a in artifacts] == ["report.json"]
    assert api.client.get(artifacts[0]["url"]).json() == {"x": 1}
    # the new job keeps its own spec, so its reports judge its own thresholds
    junit = api.client.get(f"/v1/jobs/{again['id']}/report?format=junit").text
    assert "min_robust_accuracy=0.5" in junit and "reused_from" in junit
    # a reuse of a reuse names the job that ran
    assert _submit(api, _spec(ids))["reused_from"] == first["id"]


def test_no_cache_runs_again_and_later_reuse_takes_the_newest(api: Api, ids: tuple[str, str]) -> None:
    first = _submit(api, _spec(ids))
    _run(api, first["id"])
    fresh = _submit(api, _spec(ids, no_cache=True))
    assert fresh["status"] == "queued" and fresh["reused_from"] is None
    assert api.enqueuer.sent[-1] == (RUN_EVALUATION, [fresh["id"]])
    _run(api, fresh["id"])
    assert _submit(api, _spec(ids))["reused_from"] == fresh["id"]


def test_only_succeeded_jobs_with_the_same_inputs_are_reused(api: Api, ids: tuple[str, str]) -> None:
    first = _submit(api, _spec(ids))
    assert _submit(api, _spec(ids))["status"] == "queued"  # the first has no result yet
    _run(api, first["id"])
    for changed in (
        _spec(ids, seed=1),
        _spec(ids, batch_size=32),
        _spec(ids, max_samples=5),
        _spec(ids, input_range=[0, 255]),
        _spec(ids, attacks=[{**ATTACKS[0], "steps": 6}]),
        _spec((ready_model(api, input_shape=[4], num_classes=3, extra=b"other"), ids[1])),
    ):
        job = _submit(api, changed)
        assert job["status"] == "queued" and job["reused_from"] is None, changed


def test_reuse_is_per_owner(api: Api, ids: tuple[str, str]) -> None:
    first = _submit(api, _spec(ids))
    _run(api, first["id"])
    job = api.store.get_job(first["id"])
    assert job.cache_key is not None
    assert api.store.reusable_job("someone-else", job.cache_key) is None
    assert api.store.reusable_job("local", job.cache_key) == job


def test_a_retried_submission_with_the_same_key_is_one_job(api: Api, ids: tuple[str, str]) -> None:
    a = _submit(api, _spec(ids), key="ci-1")
    b = _submit(api, _spec(ids), key="ci-1")
    assert a["id"] == b["id"]
    assert [args for name, args in api.enqueuer.sent if name == RUN_EVALUATION] == [[a["id"]]]


def test_the_cache_key_changes_with_every_input_that_changes_a_result() -> None:
    options = EvaluationOptions.model_validate({"attacks": ATTACKS})
    base = {"model_sha256": "a" * 64, "model_output": "logits", "dataset_sha256": "b" * 64}
    key = evaluation_cache_key(options, **base)
    assert key == evaluation_cache_key(EvaluationOptions.model_validate({"attacks": ATTACKS}), **base)
    assert len(key) == 64
    variants = [
        evaluation_cache_key(options, **{**base, "model_sha256": "c" * 64}),
        evaluation_cache_key(options, **{**base, "model_output": "probabilities"}),
        evaluation_cache_key(options, **{**base, "dataset_sha256": "c" * 64}),
        *(
            evaluation_cache_key(options.model_copy(update={field: value}), **base)
            for field, value in [
                ("seed", 1),
                ("batch_size", 1),
                ("max_samples", 9),
                ("input_range", (0.0, 2.0)),
            ]
        ),
    ]
    assert len({key, *variants}) == 1 + len(variants)


def test_results_from_before_the_autoattack_engine_are_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.domain import reuse

    options = EvaluationOptions.model_validate({"attacks": ATTACKS})
    base = {"model_sha256": "a" * 64, "model_output": "logits", "dataset_sha256": "b" * 64}
    now = evaluation_cache_key(options, **base)
    assert reuse.KEY_VERSION >= 3  # 3: the engine of issue 13 (autoattack, stage arrays)
    monkeypatch.setattr(reuse, "KEY_VERSION", 2)
    assert evaluation_cache_key(options, **base) != now


def test_models_and_datasets_can_be_found_by_sha256(api: Api, ids: tuple[str, str]) -> None:
    model = api.client.get(f"/v1/models/{ids[0]}").json()
    found = api.client.get("/v1/models", params={"sha256": model["sha256"].upper()}).json()["items"]
    assert [m["id"] for m in found] == [ids[0]]
    assert api.client.get("/v1/models", params={"sha256": "0" * 64}).json()["items"] == []
    dataset = api.client.get(f"/v1/datasets/{ids[1]}").json()
    found = api.client.get("/v1/datasets", params={"sha256": dataset["sha256"]}).json()["items"]
    assert [d["id"] for d in found] == [ids[1]]
    assert api.client.get("/v1/datasets", params={"sha256": hashlib.sha256(b"").hexdigest()}).json() == {
        "items": []
    }
    assert_problem(api.client.get("/v1/models", params={"sha256": "not-a-sha"}), 422)


def test_a_reused_job_still_calls_its_callback(api: Api, ids: tuple[str, str]) -> None:
    from service.domain.tasks import DELIVER_CALLBACK

    _run(api, _submit(api, _spec(ids))["id"])
    job = _submit(api, _spec(ids, callback_url="http://9.9.9.9/hook"))
    assert job["reused_from"] is not None
    assert api.enqueuer.sent[-1] == (DELIVER_CALLBACK, [job["id"]])
