"""Issue 16 end to end: `cw` and `fmn` through the real API and a real worker, down to the artifacts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import Service, one_database

EPS = [1.0, 2.0]
SPEC = {
    "dataset_id": "builtin:mnist-5k:test",
    "max_samples": 32,
    "attacks": [
        # Budgets far below the defaults: the figures' correctness is the unit tests' job.
        {"name": "cw", "eps": EPS, "binary_search_steps": 3, "steps": 40, "initial_const": 1.0},
        {"name": "fmn", "norm": "l2", "eps": EPS, "steps": 40},
    ],
    "thresholds": [{"metric": "minimum_norm.fmn.l2.median", "min": 0.01}],
    "no_cache": True,
}


@one_database
def test_minimum_norm_attacks_report_norms_rows_and_per_sample_values(
    service: Service, e2e_files: dict[str, Path]
) -> None:
    model = service.upload_model(e2e_files["keras"], name="cnn-minimum-norm")
    assert model.status_code in (200, 201), model.text
    model_id = service.wait_model(model.json()["id"])["id"]
    submitted = service.submit({"model_id": model_id, **SPEC})
    assert submitted.status_code == 202, submitted.text
    job = service.wait_job(submitted.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job
    result = job["result"]

    entries = {(e["name"], e["norm"]): e for e in result["minimum_norm"]}
    assert set(entries) == {("cw", "l2"), ("fmn", "l2")}
    for entry in entries.values():
        q = entry["quantiles"]  # None stands for infinity (no adversarial found)
        ordered = [q["p10"], q["p25"], entry["median"], q["p75"], q["p90"]]
        finite = [v for v in ordered if v is not None]
        assert finite == sorted(finite) and all(v > 0 for v in finite)
        assert ordered[: len(finite)] == finite
        accuracies = [point["robust_accuracy"] for point in entry["curve"]]
        assert accuracies == sorted(accuracies, reverse=True)
    # One row per given eps, and each agrees with the per-sample norms written to per_sample.npz.
    rows = result["attacks"]
    assert sorted((row["name"], row["eps"]) for row in rows) == sorted(
        (name, eps) for name in ("cw", "fmn") for eps in EPS
    )
    with service.client() as client:
        per_sample = client.get(f"/v1/jobs/{job['id']}/artifacts/per_sample.npz")
        assert per_sample.status_code == 200
        markdown = client.get(f"/v1/jobs/{job['id']}/report", params={"format": "markdown"})
        junit = client.get(f"/v1/jobs/{job['id']}/report", params={"format": "junit"})
    arrays = np.load(io.BytesIO(per_sample.content))
    norms = {key: arrays[key] for key in arrays.files if key.startswith("minimum_norm_")}
    assert len(norms) == 2 and all(v.shape == (32,) for v in norms.values())
    for entry in entries.values():
        values = norms[f"minimum_norm_{entry['attack']}"]
        for row in (r for r in rows if r["name"] == entry["name"]):
            assert row["robust_accuracy"] == pytest.approx(np.mean(values > row["eps"]))
    assert markdown.status_code == 200 and "Minimal adversarial norms" in markdown.text
    assert junit.status_code == 200 and "minimum_norm.fmn.l2.median" in junit.text
    assert "<failure" not in junit.text
