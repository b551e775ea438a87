"""Realistic job results for the UI tests: an evaluation (two attacks, three eps) and a training."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.domain.artifacts import EXAMPLES_ARTIFACT
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from workers.evaluation.examples import KeptRun, example_arrays, examples_npz

EVIL = "<script>alert(1)</script>"


def _cost() -> dict[str, Any]:
    return {
        "forward_passes": 100,
        "backward_passes": 100,
        "forward_per_sample": 1.0,
        "backward_per_sample": 1.0,
    }


def attack_result(name: str, eps: float, robust: float, **spec: Any) -> dict[str, Any]:
    return {
        "name": name,
        "norm": "linf",
        "eps": eps,
        "spec": {"name": name, "eps": eps, "norm": "linf", **spec},
        "robust_accuracy": robust,
        "attack_success_rate": 1 - robust,
        "num_attacked": 95,
        "mean_perturbation": {"linf": eps, "l2": 10 * eps},
        "per_class_robust_accuracy": {str(c): max(robust - 0.02 * c, 0.0) for c in range(10)},
        "seconds": 0.5,
        "samples_per_second": 200.0,
        "cost": _cost(),
    }


def evaluation_result(warning: str = "robust accuracy rises with eps for fgsm") -> dict[str, Any]:
    attacks = [
        attack_result("fgsm", 0.1, 0.62),
        attack_result("fgsm", 0.2, 0.31),
        attack_result("fgsm", 0.3, 0.12),
        attack_result("pgd", 0.1, 0.55, steps=10),
        attack_result("pgd", 0.2, 0.12, steps=10),
        attack_result("pgd", 0.3, 0.01, steps=10),
    ]
    worst = [
        {
            "norm": "linf",
            "eps": eps,
            "attacks": ["fgsm", "pgd"],
            "robust_accuracy": robust,
            "per_class_robust_accuracy": {str(c): max(robust - 0.01 * c, 0.0) for c in range(10)},
        }
        for eps, robust in [(0.1, 0.5), (0.2, 0.1), (0.3, 0.0)]
    ]
    return {
        "num_samples": 100,
        "clean_accuracy": 0.95,
        "per_class_clean_accuracy": {str(c): 0.95 for c in range(10)},
        "attacks": attacks,
        "worst_case": worst,
        "warnings": [warning],
        "cost": _cost(),
        "model_sha256": "a" * 64,
        "dataset_sha256": "b" * 64,
        "seed": 0,
        "input_range": [0.0, 1.0],
        "seconds": 3.2,
        "versions": {"tensorflow": "2.21.0", "keras": "3.15.0", "numpy": "2.0", "parry": "0.1.0"},
    }


def training_result(model_id: str | None = None) -> dict[str, Any]:
    history = [
        {
            "epoch": e,
            "loss": 2.0 / e,
            "train_accuracy": 0.3 + 0.1 * e,
            "clean_accuracy": 0.8 + 0.03 * e,
            "robust_accuracy": 0.1 + 0.12 * e,
            "eps": min(0.3, 0.1 * e),
            "learning_rate": 0.001,
            "seconds": 4.0,
        }
        for e in range(1, 6)
    ]
    before = evaluation_result()
    after = evaluation_result()
    after["attacks"] = [
        dict(a, robust_accuracy=min(a["robust_accuracy"] + 0.4, 0.9)) for a in after["attacks"]
    ]
    return {
        "method": "fgsm-rs",
        "history": history,
        "best_epoch": 5,
        "epochs_completed": 5,
        "stopped_early": False,
        "rolled_back": False,
        "notes": ["the eps ramp took the first 2 epochs"],
        "before": before,
        "after": after,
        "num_train_samples": 4000,
        "num_validation_samples": 1000,
        "seconds": 20.0,
        "resumed": False,
        "model_sha256": "a" * 64,
        "train_dataset_sha256": "c" * 64,
        "validation_dataset_sha256": "d" * 64,
        "seed": 0,
        "model_id": model_id,
        "versions": {"tensorflow": "2.21.0"},
    }


def finished_job(
    store: JobStore, *, owner: str, kind: str, spec: dict[str, Any], result: dict[str, Any]
) -> str:
    job, _ = store.create_job(owner=owner, kind=kind, spec=spec)
    assert store.claim(job.id, worker="w", lease_seconds=60) is not None
    assert store.finish(job.id, worker="w", status="succeeded", result=result)
    return job.id


def write_examples(artifacts: ArtifactStore, job_id: str, *, k: int = 4) -> None:
    """A small examples artifact: `k` 8x8 digits, an adversarial version at two eps."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (k, 8, 8, 1)).astype(np.float32)
    labels = np.arange(k) % 10
    runs = [
        KeptRun(
            "pgd", "linf", eps, 0.1, np.clip(x + rng.uniform(-eps, eps, x.shape), 0, 1), (labels + 1) % 10
        )
        for eps in (0.1, 0.3)
    ]
    arrays = example_arrays(x, labels, labels, np.arange(k), runs, input_range=(0.0, 1.0))
    artifacts.write_job_artifact(job_id, EXAMPLES_ARTIFACT, examples_npz(arrays))
