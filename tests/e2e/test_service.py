"""Issue 3 end to end: upload, validate, evaluate, cancel, restart and kill, through the real processes."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.domain.specs import EvaluationOptions
from tests.e2e.conftest import RedisServer, Service, one_database, postgres_only
from tests.sandboxing import child_processes

ATTACKS: list[dict[str, Any]] = [
    {"name": "fgsm", "eps": [0.05, 0.1, 0.2]},
    {"name": "pgd", "eps": 0.1, "steps": 10, "step_size": 0.025},
]
# Minutes of work (tiny-eps PGD, so few samples fall and every restart runs), in small batches so a
# cancel lands between two of them; every test that starts it cancels it.
LONG_JOB: dict[str, Any] = {
    "dataset_id": "builtin:mnist-5k",
    "attacks": [{"name": "pgd", "eps": 0.01, "steps": 10, "restarts": 50}],
    "batch_size": 16,
    "no_cache": True,
}


@pytest.fixture(scope="session")
def ready_models(service: Service, e2e_files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The trained CNN uploaded as a SavedModel zip and as .keras, both validated."""
    models = {}
    for kind in ("saved_model_zip", "keras"):
        response = service.upload_model(e2e_files[kind], name=f"cnn-{kind}")
        assert response.status_code in (200, 201), response.text
        models[kind] = service.wait_model(response.json()["id"])
    return models


@pytest.fixture(scope="session")
def dataset(service: Service, e2e_files: dict[str, Path]) -> dict[str, Any]:
    response = service.upload_dataset(e2e_files["dataset"])
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _submit_ok(service: Service, spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    response = service.submit(spec, **kw)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    return body


def _long_job(service: Service, model_id: str) -> dict[str, Any]:
    return _submit_ok(service, {"model_id": model_id, **LONG_JOB})


def _wait_progress(service: Service, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until the job runs and has reported progress (its model is loaded and attacks compiled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.wait_job(job_id, {"running", "succeeded", "failed", "cancelled"}, timeout=timeout)
        if job["status"] != "running" or (job["progress"] or {}).get("fraction", 0) > 0:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} made no progress in {timeout} s")


def _cancel(service: Service, job_id: str) -> httpx.Response:
    with service.client() as client:
        return client.post(f"/v1/jobs/{job_id}/cancel")


# ---- models --------------------------------------------------------------------------------


def test_uploaded_models_become_ready_with_their_shapes(ready_models: dict[str, dict[str, Any]]) -> None:
    for kind, model in ready_models.items():
        assert model["status"] == "ready", (kind, model)
        assert model["input_shape"] == [28, 28, 1]
        assert model["num_classes"] == 10
        assert model["output"] == "logits"
        assert model["format"] == {"saved_model_zip": "saved_model", "keras": "keras"}[kind]


@one_database
@pytest.mark.parametrize("kind", ["saved_model_tgz", "h5", "keras_softmax"])
def test_the_other_formats_become_ready(service: Service, e2e_files: dict[str, Path], kind: str) -> None:
    response = service.upload_model(e2e_files[kind])
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready", model
    assert model["output"] == ("probabilities" if kind == "keras_softmax" else "logits")


def test_same_bytes_uploaded_again_give_the_same_model(
    service: Service, ready_models: dict[str, dict[str, Any]], e2e_files: dict[str, Path]
) -> None:
    again = service.upload_model(e2e_files["keras"])
    assert again.status_code == 200
    assert again.json()["id"] == ready_models["keras"]["id"]


def _rejection(service: Service, path: Path) -> str:
    """The sentence a bad model gets, at upload (422) or after validation (rejected)."""
    response = service.upload_model(path)
    if response.status_code == 422:
        detail: str = response.json()["detail"]
        return detail
    assert response.status_code == 201, response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "rejected", model
    rejection: str = model["rejection"]
    return rejection


def _assert_sentence(text: str) -> None:
    assert text and "Traceback" not in text and "\n" not in text.strip(), text
    assert len(text) < 400, text


@one_database
def test_unloadable_models_are_rejected_with_a_sentence(
    service: Service, e2e_files: dict[str, Path], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.zip"
    data = e2e_files["saved_model_zip"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (garbage, truncated):
        _assert_sentence(_rejection(service, path))


@one_database
def test_a_keras_model_with_a_lambda_layer_is_rejected(service: Service, tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    reason = _rejection(service, path)
    _assert_sentence(reason)
    assert "lambda" in reason.lower(), reason


# ---- evaluations ---------------------------------------------------------------------------


@one_database
@pytest.mark.parametrize("kind", ["saved_model_zip", "keras"])
def test_evaluation_matches_the_in_process_engine(
    service: Service,
    ready_models: dict[str, dict[str, Any]],
    dataset: dict[str, Any],
    e2e_files: dict[str, Path],
    kind: str,
) -> None:
    spec = {"model_id": ready_models[kind]["id"], "dataset_id": dataset["id"], "attacks": ATTACKS, "seed": 3}
    job = service.wait_job(_submit_ok(service, spec)["id"])
    assert job["status"] == "succeeded", job
    remote = job["result"]

    from workers.evaluation.local import run_local_evaluation

    options = EvaluationOptions.model_validate({"attacks": ATTACKS, "seed": 3})
    local = run_local_evaluation(e2e_files[kind], str(e2e_files["dataset"]), options).result.model_dump(
        mode="json"
    )

    assert remote["num_samples"] == local["num_samples"] == 200
    assert remote["clean_accuracy"] == local["clean_accuracy"]
    assert remote["dataset_sha256"] == local["dataset_sha256"] == dataset["sha256"]
    assert remote["model_sha256"] == ready_models[kind]["sha256"]
    got = [(a["name"], a["eps"], a["robust_accuracy"], a["attack_success_rate"]) for a in remote["attacks"]]
    want = [(a["name"], a["eps"], a["robust_accuracy"], a["attack_success_rate"]) for a in local["attacks"]]
    assert got == want
    assert [a["eps"] for a in remote["attacks"]] == [0.05, 0.1, 0.2, 0.1]
    for r, w in zip(remote["attacks"], local["attacks"], strict=True):
        assert r["mean_perturbation"]["linf"] == pytest.approx(
            w["mean_perturbation"]["linf"], rel=1e-4, abs=1e-6
        )
    # FGSM must hurt more as eps grows on a normally trained CNN.
    fgsm = [a["robust_accuracy"] for a in remote["attacks"] if a["name"] == "fgsm"]
    assert fgsm[0] >= fgsm[1] >= fgsm[2] and fgsm[2] < remote["clean_accuracy"]

    with service.client() as client:
        listing = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
        names = {item["name"] for item in (listing["items"] if isinstance(listing, dict) else listing)}
        assert {"report.json", "per_sample.npz"} <= names
        report = client.get(f"/v1/jobs/{job['id']}/artifacts/report.json")
        assert report.status_code == 200 and report.json()["clean_accuracy"] == remote["clean_accuracy"]


@one_database
def test_builtin_dataset_and_max_samples(service: Service, ready_models: dict[str, dict[str, Any]]) -> None:
    spec = {
        "model_id": ready_models["keras"]["id"],
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "fgsm", "eps": 0.1}],
        "max_samples": 64,
    }
    job = service.wait_job(_submit_ok(service, spec)["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["num_samples"] == 64
    assert job["result"]["clean_accuracy"] > 0.8
    assert job["attempts"] == 1


def test_a_bad_spec_is_a_422_naming_the_field(
    service: Service, ready_models: dict[str, dict[str, Any]]
) -> None:
    spec = {
        "model_id": ready_models["keras"]["id"],
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "pgd", "eps": 0.1, "stpes": 10}],
    }
    response = service.submit(spec)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert any("stpes" in [str(part) for part in err["loc"]] for err in body["errors"]), body


def test_unknown_ids_are_404(service: Service, ready_models: dict[str, dict[str, Any]]) -> None:
    with service.client() as client:
        assert client.get("/v1/jobs/job_doesnotexist").status_code == 404
        assert client.post("/v1/jobs/job_doesnotexist/cancel").status_code == 404
        assert client.get("/v1/models/mdl_doesnotexist").status_code == 404
    response = service.submit(
        {
            "model_id": "mdl_doesnotexist",
            "dataset_id": "builtin:digits",
            "attacks": [{"name": "fgsm", "eps": 0.1}],
        }
    )
    assert response.status_code == 404, response.text
    response = service.submit(
        {
            "model_id": ready_models["keras"]["id"],
            "dataset_id": "dst_nope",
            "attacks": [{"name": "fgsm", "eps": 0.1}],
        }
    )
    assert response.status_code == 404, response.text


def test_the_same_idempotency_key_gives_the_same_job(
    service: Service, ready_models: dict[str, dict[str, Any]]
) -> None:
    spec = {
        "model_id": ready_models["keras"]["id"],
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [{"name": "fgsm", "eps": 0.1}],
        "max_samples": 32,
    }
    key = uuid.uuid4().hex
    first = service.submit(spec, key=key)
    second = service.submit(spec, key=key)
    assert first.status_code == 202 and second.status_code in (200, 202)
    assert first.json()["id"] == second.json()["id"]
    assert service.submit(spec, key=uuid.uuid4().hex).json()["id"] != first.json()["id"]
    assert service.wait_job(first.json()["id"])["status"] == "succeeded"


# ---- cancel --------------------------------------------------------------------------------


def test_cancel_a_queued_job_and_a_running_job(
    service: Service, ready_models: dict[str, dict[str, Any]]
) -> None:
    model_id = ready_models["keras"]["id"]
    running = _long_job(service, model_id)
    queued = _long_job(service, model_id)  # waits behind the first: one solo worker
    assert _wait_progress(service, running["id"])["status"] == "running"

    assert _cancel(service, queued["id"]).status_code == 202
    job = service.wait_job(queued["id"], timeout=5)
    assert job["status"] == "cancelled"

    started = time.monotonic()
    assert _cancel(service, running["id"]).status_code == 202
    job = service.wait_job(running["id"], timeout=30)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - started < 15

    time.sleep(1.0)  # the queued job's message reaches the worker now: it must not start
    job = service.wait_job(queued["id"])
    assert job["status"] == "cancelled" and job["started_at"] is None, job


# ---- restarts and crashes ------------------------------------------------------------------


def _medium_job(service: Service, model_id: str) -> dict[str, Any]:
    """About 5 s of PGD restarts: long enough to restart something in the middle."""
    return _submit_ok(
        service,
        {
            "model_id": model_id,
            "dataset_id": "builtin:mnist-5k:test",
            "attacks": [{"name": "pgd", "eps": 0.01, "steps": 10, "restarts": 12}],
            "batch_size": 50,
            "max_samples": 400,
            "no_cache": True,  # every test that uses it must run it, not reuse an earlier result
        },
    )


@postgres_only  # on SQLite: test_faults.py restarts the API mid-job
def test_restarting_the_api_mid_job_loses_nothing(
    service: Service, ready_models: dict[str, dict[str, Any]]
) -> None:
    job = _medium_job(service, ready_models["keras"]["id"])
    _wait_progress(service, job["id"])
    service.stop_api()
    service.start_api()
    done = service.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["result"]["num_samples"] == 400


@postgres_only  # on SQLite: test_faults.py kills a worker mid-job
def test_a_killed_workers_job_is_finished_by_the_next_worker(
    service: Service, ready_models: dict[str, dict[str, Any]], wait_until: Callable[..., None]
) -> None:
    job = _medium_job(service, ready_models["keras"]["id"])
    _wait_progress(service, job["id"])
    assert child_processes(str(service.data_dir / "work")), "the job's model process is not running"
    service.kill_worker(signal.SIGKILL)
    # The model's process dies with its worker: nothing of the job keeps running unwatched.
    wait_until(lambda: not child_processes(str(service.data_dir / "work")), timeout=30)
    service.start_worker()
    done = service.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["result"]["num_samples"] == 400


@one_database
def test_a_stopped_worker_hands_its_job_back(
    service: Service, ready_models: dict[str, dict[str, Any]]
) -> None:
    job = _medium_job(service, ready_models["keras"]["id"])
    _wait_progress(service, job["id"])
    started = time.monotonic()
    try:
        service.kill_worker(signal.SIGTERM)
        assert time.monotonic() - started < 20  # it did not wait for the job to finish
        with service.client() as client:
            assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    finally:
        service.start_worker()  # the tests after this one need a worker whatever happened here
    done = service.wait_job(job["id"])
    assert done["status"] == "succeeded", done


@one_database
def test_a_job_submitted_while_the_broker_is_down_runs_once_it_is_back(
    service: Service, ready_models: dict[str, dict[str, Any]], redis_server: RedisServer | None
) -> None:
    if redis_server is None:
        pytest.skip("the broker is not ours to restart (PARRY_E2E_REDIS_URL)")
    if "PARRY_DATABASE_URL" in service.env:
        pytest.skip("the broker's restart does not depend on the database: the SQLite variant covers it")
    redis_server.stop()  # no persistence: whatever was queued in it is gone too
    try:
        started = time.monotonic()
        job = _submit_ok(
            service,
            {
                "model_id": ready_models["keras"]["id"],
                "dataset_id": "builtin:mnist-5k:test",
                "attacks": [{"name": "fgsm", "eps": 0.1}],
                "max_samples": 32,
                "no_cache": True,
            },
        )
        assert time.monotonic() - started < 10  # the API does not hang on a dead broker
        assert job["status"] == "queued"
    finally:
        redis_server.start()
    # The worker reconnects; its reconciler sends the job again once it has been queued for 5 s.
    done = service.wait_job(job["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1


# ---- callbacks -----------------------------------------------------------------------------


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        failing = _Hooks.fail_first > 0
        _Hooks.fail_first -= 1
        if not failing:
            _Hooks.received.append(body)
        self.send_response(503 if failing else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@one_database
def test_a_finished_job_is_posted_to_its_callback_url_with_retries(
    service: Service, ready_models: dict[str, dict[str, Any]]
) -> None:
    _Hooks.received, _Hooks.fail_first = [], 1
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        spec = {
            "model_id": ready_models["keras"]["id"],
            "dataset_id": "builtin:mnist-5k:test",
            "attacks": [{"name": "fgsm", "eps": 0.1}],
            "max_samples": 16,
            "no_cache": True,
            "callback_url": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
        }
        job = service.wait_job(_submit_ok(service, spec)["id"])
        deadline = time.monotonic() + 30  # the first POST gets a 503; the retry comes about 2 s later
        while not _Hooks.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_Hooks.received) == 1
        assert _Hooks.received[0]["id"] == job["id"] and _Hooks.received[0]["status"] == "succeeded"
        assert _Hooks.received[0]["result"] == job["result"]
    finally:
        receiver.shutdown()
        receiver.server_close()
