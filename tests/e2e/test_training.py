"""Issue 4 end to end: adversarial training through the API and a real worker, killed and resumed.

Runs on SQLite only: the job store's part is the same as for evaluations (covered on both databases in
test_service.py), while the training itself is minutes of CPU that a second database would only repeat.
"""

from __future__ import annotations

import re
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from tests.e2e.conftest import Service, one_database

pytestmark = one_database

PGD20 = {"name": "pgd", "eps": 0.2, "steps": 20}
FGSM_RS: dict[str, Any] = {
    "dataset_id": "builtin:mnist-5k:train",
    "validation_dataset_id": "builtin:mnist-5k:test",
    "method": "fgsm-rs",
    "eps": 0.2,
    "epochs": 3,
    "batch_size": 100,
    "validation_samples": 200,
    "evaluate": [PGD20],
}
PROGRESS_STAGE = re.compile(r"^epoch (\d+)/(\d+) batch \d+/\d+ loss \d+\.\d+$")


@pytest.fixture(scope="module")
def cnn(service: Service, e2e_files: dict[str, Path]) -> dict[str, Any]:
    """The clean-trained small CNN uploaded as .keras and validated."""
    response = service.upload_model(e2e_files["keras"], name="cnn")
    assert response.status_code in (200, 201), response.text
    model = service.wait_model(response.json()["id"])
    assert model["status"] == "ready" and model["trainable"] is True, model
    return model


def _train(service: Service, spec: dict[str, Any]) -> dict[str, Any]:
    with service.client() as client:
        response = client.post("/v1/trainings", json=spec)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['id']}" and body["kind"] == "training"
    return body


@pytest.fixture(scope="module")
def trained(service: Service, cnn: dict[str, Any]) -> dict[str, Any]:
    job = _train(service, {"model_id": cnn["id"], **FGSM_RS})
    done = service.wait_job(job["id"], timeout=300)
    assert done["status"] == "succeeded", done
    return done


def test_fgsm_rs_makes_the_model_robust(trained: dict[str, Any]) -> None:
    result = trained["result"]
    before, after = result["before"]["attacks"][0], result["after"]["attacks"][0]
    assert before["name"] == after["name"] == "pgd" and before["eps"] == after["eps"] == 0.2
    # Measured here: PGD-20 robust accuracy at eps 0.2 on the 1,000 test digits went from 0.12 to 0.69
    # (clean 0.97) in three epochs (20 s). Every random draw is seeded, so the run is reproducible; a
    # 0.3 gain leaves a wide margin for other CPUs' float differences (a few points at most) and is far
    # beyond anything a training step that does not learn could give.
    assert before["robust_accuracy"] < 0.3, before
    assert after["robust_accuracy"] >= before["robust_accuracy"] + 0.3, (before, after)
    assert result["after"]["clean_accuracy"] >= 0.9
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3] and result["epochs_completed"] == 3
    assert result["num_train_samples"] == 4000 and result["num_validation_samples"] == 1000
    assert result["seconds"] > 0 and not result["resumed"]


def test_the_downloaded_saved_model_reproduces_the_reported_accuracy(
    service: Service, trained: dict[str, Any], mnist_test: ArrayDataset, tmp_path: Path
) -> None:
    import tensorflow as tf

    job_id = trained["id"]
    with service.client() as client:
        names = {a["name"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()}
        assert {"model.zip", "model.keras", "report.json"} <= names
        archive = client.get(f"/v1/jobs/{job_id}/artifacts/model.zip")
        assert archive.status_code == 200
    (tmp_path / "model.zip").write_bytes(archive.content)
    with zipfile.ZipFile(tmp_path / "model.zip") as zf:
        zf.extractall(tmp_path / "saved_model")
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    out = loaded.signatures["serving_default"](tf.constant(mnist_test.x))
    predictions = np.argmax(next(iter(out.values())).numpy(), axis=1)
    clean = float((predictions == mnist_test.y).mean())
    # The exported graph runs the same float32 ops: one flipped borderline digit at most.
    assert clean == pytest.approx(trained["result"]["after"]["clean_accuracy"], abs=0.0015)


def test_the_robustified_model_is_registered_and_can_be_evaluated(
    service: Service, trained: dict[str, Any], cnn: dict[str, Any]
) -> None:
    result = trained["result"]
    with service.client() as client:
        model = client.get(f"/v1/models/{result['model_id']}").json()
    assert model["status"] == "ready" and model["format"] == "saved_model", model
    # Named after the upload: other tests of the session may have sent these bytes first, under their name.
    assert model["name"] == f"{cnn['name']}-fgsm-rs" and model["input_shape"] == [28, 28, 1]
    assert model["id"] != cnn["id"] and model["sha256"] != cnn["sha256"]
    spec = {
        "model_id": model["id"],
        "dataset_id": "builtin:mnist-5k:test",
        "attacks": [PGD20],
        "no_cache": True,
    }
    job = service.submit(spec)
    assert job.status_code == 202, job.text
    done = service.wait_job(job.json()["id"])
    assert done["status"] == "succeeded", done
    after = result["after"]
    assert done["result"]["clean_accuracy"] == pytest.approx(after["clean_accuracy"], abs=0.0015)
    # Same attack, seed and batches on the same weights; the SavedModel's floats may flip a borderline case.
    assert done["result"]["attacks"][0]["robust_accuracy"] == pytest.approx(
        after["attacks"][0]["robust_accuracy"], abs=0.01
    )


def test_a_killed_workers_training_resumes_from_its_checkpoint(
    service: Service, cnn: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli.main import main

    # Submitted with `parry train`, so the CLI is checked against the real route too.
    extra = tmp_path / "spec.json"
    # Eight short epochs: on a quiet machine four ended before a poll saw epoch 2 (2 s an epoch).
    extra.write_text('{"validation_samples": 100, "batch_size": 100}')
    argv = [
        "train", "--server", service.base_url, "--model", cnn["id"], "--dataset", "builtin:mnist-5k:train",
        "--validation-dataset", "builtin:mnist-5k:test", "--method", "fgsm-rs", "--eps", "0.2",
        "--epochs", "8", "--spec", str(extra),
    ]  # fmt: skip
    assert main(argv) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.startswith("job_")

    # Wait for epoch 2: epoch 1 is checkpointed by then.
    stage = _wait_stage(service, job_id, lambda epoch: epoch >= 2)
    service.kill_worker(signal.SIGKILL)
    service.start_worker()
    # The next worker takes the job over once its lease expires and goes on from epoch 2: no batch of
    # epoch 1 is trained again (the progress left by the killed worker is of epoch 2 too).
    stages = _stages_until_done(service, job_id, attempt=2)
    assert stages, "the second worker reported no training batch"
    assert all(int(s.group(1)) >= 2 for s in stages), (stage, [s.group(0) for s in stages])
    done = service.wait_job(job_id, timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    result = done["result"]
    assert result["resumed"] and [h["epoch"] for h in result["history"]] == list(range(1, 9)), result
    with service.client() as client:
        assert client.get(f"/v1/models/{result['model_id']}").json()["status"] == "ready"


def _stages_until_done(
    service: Service, job_id: str, *, attempt: int, timeout: float = 300
) -> list[re.Match[str]]:
    """The training stages the job reports from its `attempt`-th claim until it ends."""
    deadline = time.monotonic() + timeout
    seen: list[re.Match[str]] = []
    with service.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return seen
            match = PROGRESS_STAGE.match((job["progress"] or {}).get("stage", ""))
            if job["attempts"] >= attempt and match and (not seen or seen[-1].group(0) != match.group(0)):
                seen.append(match)
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def _wait_stage(service: Service, job_id: str, wanted: Any, timeout: float = 180) -> str:
    """Poll until a worker reports a training batch of an epoch `wanted(epoch)` accepts; the stage."""
    deadline = time.monotonic() + timeout
    with service.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] in ("queued", "running"), job
            progress = job["progress"] or {}
            match = PROGRESS_STAGE.match(progress.get("stage", ""))
            if job["status"] == "running" and match and wanted(int(match.group(1))):
                assert progress["eta_seconds"] is not None and 0 < progress["fraction"] < 1, progress
                return str(progress["stage"])
            time.sleep(0.2)
    raise AssertionError(f"job {job_id} reported no wanted training batch in {timeout} s")
