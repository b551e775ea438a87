"""Evaluation results made up for tests of verdicts, reports and `parry check` (no TensorFlow involved)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import TypeAdapter

from service.domain.results import EvaluationResult
from service.domain.specs import AttackSpec

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AttackSpec)


def fake_result(
    attacks: Sequence[dict[str, Any]],
    robust: Callable[[str, float], float] = lambda name, eps: max(0.0, 0.9 - eps),
    *,
    num_samples: int = 200,
    model_sha256: str = "m" * 64,
    dataset_sha256: str = "d" * 64,
    warnings: Sequence[str] = (),
) -> EvaluationResult:
    """A result with one row per attack × eps, in the engine's order; `robust(name, eps)` sets accuracies
    (rounded to whole samples, as real ones are)."""
    rows = []
    for raw in attacks:
        spec = _ADAPTER.validate_python(raw)
        for eps in spec.eps_values():
            accuracy = round(robust(spec.name, eps) * num_samples) / num_samples
            row_spec = spec.model_dump(mode="json") | {"eps": eps}
            rows.append(
                {
                    "name": spec.name,
                    "norm": spec.norm,
                    "eps": eps,
                    "spec": row_spec,
                    "robust_accuracy": accuracy,
                    "attack_success_rate": 1 - accuracy / 0.95,
                    "num_attacked": int(0.95 * num_samples),
                    "mean_perturbation": {"linf": eps, "l2": eps * 10},
                    "per_class_robust_accuracy": {"0": accuracy},
                    "seconds": 1.5,
                    "samples_per_second": num_samples / 1.5,
                    "cost": {
                        "forward_passes": num_samples,
                        "backward_passes": num_samples,
                        "forward_per_sample": 1.0,
                        "backward_per_sample": 1.0,
                    },
                }
            )
    # The worst case of made-up rows: the lowest row at each norm and eps (a real one may be lower still).
    worst = [
        {
            "norm": norm,
            "eps": eps,
            "attacks": [r["name"] for r in rows if (r["norm"], r["eps"]) == (norm, eps)],
            "robust_accuracy": min(
                r["robust_accuracy"] for r in rows if (r["norm"], r["eps"]) == (norm, eps)
            ),
            "per_class_robust_accuracy": {},
        }
        for norm, eps in sorted({(r["norm"], r["eps"]) for r in rows})
    ]
    return EvaluationResult.model_validate(
        {
            "num_samples": num_samples,
            "clean_accuracy": 0.95,
            "attacks": rows,
            "worst_case": worst,
            "warnings": list(warnings),
            "model_sha256": model_sha256,
            "dataset_sha256": dataset_sha256,
            "seed": 0,
        }
    )
