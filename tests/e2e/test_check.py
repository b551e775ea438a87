"""Issue 5 end to end: `parry check` against the real API, worker and Redis (exit codes, JUnit, reuse).

Small on purpose: 200 MNIST test samples, PGD-10 and FGSM; every later check reuses the first result
unless it asks for `--no-cache`.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cli.main import main
from tests.e2e.conftest import Service, free_port, one_database

CHECKS = """
[model]
path = "{model}"
[dataset]
path = "{dataset}"
[evaluation]
batch_size = 100
seed = {seed}
[[checks]]
attack = "pgd"
eps = 0.1
steps = 10
min_robust_accuracy = {pgd_bar}
[[checks]]
attack = "fgsm"
eps = [0.05, 0.1]
min_robust_accuracy = 0.0
use_lower_bound = true
"""


@pytest.fixture(autouse=True)
def _no_ci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GITHUB_STEP_SUMMARY",
        "GITHUB_RUN_ID",
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_JOB",
        "CI_PIPELINE_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PARRY_SERVER", raising=False)


@pytest.fixture(scope="session")
def seed(service: Service) -> int:
    """A seed of this service's own, so no other test's evaluation is reused by accident."""
    return 1000 + service.port % 1000


def write_checks(
    tmp_path: Path, files: dict[str, Path], *, seed: int, pgd_bar: float = 0.0, **paths: Path
) -> Path:
    config = tmp_path / "parry.toml"
    model = paths.get("model", files["keras"])
    config.write_text(CHECKS.format(model=model, dataset=files["dataset"], seed=seed, pgd_bar=pgd_bar))
    return config


def run_check(service: Service, config: Path, *extra: str) -> int:
    return main(["check", "--config", str(config), "--server", service.base_url, *extra])


def cases(junit: Path) -> dict[str, bool]:
    """testcase name -> passed, from a JUnit file."""
    root = ET.parse(junit).getroot()
    return {str(c.get("name")): c.find("failure") is None for c in root.iter("testcase")}


def test_check_passes_then_is_reused_then_runs_again_with_no_cache(
    service: Service,
    e2e_files: dict[str, Path],
    seed: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_checks(tmp_path, e2e_files, seed=seed)
    junit, report = tmp_path / "junit.xml", tmp_path / "check.json"
    assert run_check(service, config, "--junit", str(junit), "--json", str(report)) == 0
    err = capsys.readouterr().err
    assert "all 3 checks passed" in err and "Traceback" not in err
    assert cases(junit) == {
        "pgd-10 linf eps=0.1": True,
        "fgsm linf eps=0.05": True,
        "fgsm linf eps=0.1": True,
    }
    first = json.loads(report.read_text())
    assert first["reused_from"] is None and first["result"]["num_samples"] == 200
    assert 0.5 < first["result"]["clean_accuracy"] <= 1.0

    assert run_check(service, config, "--json", str(report), "--quiet") == 0
    second = json.loads(report.read_text())
    assert second["job_id"] != first["job_id"] and second["reused_from"] == first["job_id"]
    assert second["result"] == first["result"]
    with service.client() as client:
        job = client.get(f"/v1/jobs/{second['job_id']}").json()
    assert job["status"] == "succeeded" and job["reused_from"] == first["job_id"]

    assert run_check(service, config, "--json", str(report), "--quiet", "--no-cache") == 0
    third = json.loads(report.read_text())
    assert third["reused_from"] is None and third["job_id"] not in (first["job_id"], second["job_id"])
    # Same seed, same batches: the run that really ran again finds the same numbers.
    robust = [[row["robust_accuracy"] for row in r["result"]["attacks"]] for r in (first, third)]
    assert robust[0] == robust[1]


@one_database
def test_check_fails_when_a_threshold_is_above_what_the_model_reaches(
    service: Service,
    e2e_files: dict[str, Path],
    seed: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_checks(tmp_path, e2e_files, seed=seed, pgd_bar=0.999)
    junit, report = tmp_path / "junit.xml", tmp_path / "check.json"
    assert run_check(service, config, "--junit", str(junit), "--json", str(report), "--quiet") == 1
    err = capsys.readouterr().err
    assert "check failed: pgd-10 linf eps=0.1: robust accuracy" in err and "below the required 99.9%" in err
    assert cases(junit) == {
        "pgd-10 linf eps=0.1": False,
        "fgsm linf eps=0.05": True,
        "fgsm linf eps=0.1": True,
    }
    failure = ET.parse(junit).getroot().find(".//failure")
    assert failure is not None and "min_robust_accuracy=0.999" in str(failure.text)
    job_id = json.loads(report.read_text())["job_id"]
    # The server renders the same JUnit verdicts from the job's own thresholds.
    with service.client() as client:
        served = client.get(f"/v1/jobs/{job_id}/report", params={"format": "junit"})
    assert served.status_code == 200 and served.text == junit.read_text()


@one_database
def test_check_errors_exit_2(
    service: Service,
    e2e_files: dict[str, Path],
    seed: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_checks(tmp_path, e2e_files, seed=seed)
    # server down
    down = ["check", "--config", str(config), "--server", f"http://127.0.0.1:{free_port()}", "--retries", "1"]
    assert main(down) == 2
    err = capsys.readouterr().err
    assert "did not answer" in err and err.count("\n") == 1
    # a model the worker rejects: an HDF5 file without a model in it
    import h5py

    not_a_model = tmp_path / f"weights-{uuid.uuid4().hex[:8]}.h5"
    with h5py.File(not_a_model, "w") as f:
        f.create_dataset("w", data=np.arange(4, dtype=np.float32))
    assert run_check(service, write_checks(tmp_path, e2e_files, seed=seed, model=not_a_model), "--quiet") == 2
    err = capsys.readouterr().err
    assert "the server rejected model" in err and err.count("\n") == 1
    # bad config
    config.write_text(config.read_text().replace("steps = 10", "steps = -3"))
    assert run_check(service, config) == 2
    err = capsys.readouterr().err
    assert "checks[0] (pgd): 'steps'" in err and err.count("\n") == 1


@one_database
def test_a_retried_submission_with_the_same_idempotency_key_creates_one_job(
    service: Service, e2e_files: dict[str, Path], seed: int
) -> None:
    response = service.upload_model(e2e_files["keras"])
    model = service.wait_model(response.json()["id"])
    spec: dict[str, Any] = {
        "model_id": model["id"],
        "dataset_id": "builtin:digits:test",
        "attacks": [{"name": "fgsm", "eps": 0.1}],
        "seed": seed + 1,
        "max_samples": 10,
        "no_cache": True,
    }
    key = f"ci-{uuid.uuid4().hex}"
    # The model takes 28×28 inputs and digits are 8×8: refused before any job exists, with or without the key.
    assert service.submit(spec, key=key).status_code == 422
    dataset = service.upload_dataset(e2e_files["dataset"]).json()
    spec["dataset_id"] = dataset["id"]
    first = service.submit(spec, key=key)
    again = service.submit(spec, key=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    with service.client() as client:
        jobs = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert sum(j["spec"].get("seed") == seed + 1 for j in jobs) == 1
    assert service.wait_job(first.json()["id"])["status"] == "succeeded"
