"""OOD detection figures of Parry's engine next to the same figures computed here with scikit-learn.

Two set-ups, both trained here in seconds (seed 0):

- digits 0-4: a small CNN trained on the 8x8 digits of classes 0-4 (builtin:digits:train); in-distribution
  is the test split's classes 0-4, OOD its classes 5-9 (uploaded as x only, as a label-less set would be);
- MNIST against digits: the bench CNN (Conv32-Pool-Conv64-Pool-Dense128-Dense10) trained 3 epochs on
  builtin:mnist-5k:train; in-distribution builtin:mnist-5k:test, OOD every 8x8 digit blown up to 28x28 (each
  pixel a 3x3 block, 2 pixels of padding).

Parry's figures come from `workers.evaluation.engine.evaluate` with `ood` (no attacks); the independent
ones from the Keras model's own logits, scores in NumPy, AUROC and AUPR from scikit-learn's metrics and
FPR at 95% TPR and the ECE counted directly. Prints a table; never passes or fails.

    python bench/natural_ood.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from service.domain.datasets import ArrayDataset, from_arrays, load_builtin  # noqa: E402
from service.domain.results import EvaluationResult  # noqa: E402
from service.domain.specs import EvaluationOptions, OODSpec  # noqa: E402
from tests.modelzoo import small_cnn, train_clean  # noqa: E402
from workers.evaluation.engine import evaluate  # noqa: E402
from workers.models.loading import from_keras  # noqa: E402

SCORES = ("msp", "max_logit", "energy")
FIGURES = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")


def _subset(data: ArrayDataset, keep: np.ndarray, name: str, *, labels: bool = True) -> ArrayDataset:
    return from_arrays(data.x[keep], data.y[keep] if labels else None, name=name)


def digits_setup() -> tuple[Any, ArrayDataset, ArrayDataset]:
    """A CNN trained on digits 0-4; the test split's 0-4 (in) and 5-9 without labels (OOD)."""
    import keras

    train, test = load_builtin("builtin:digits:train"), load_builtin("builtin:digits:test")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(5),
        ]
    )
    train_clean(model, _subset(train, train.y < 5, "digits 0-4"), epochs=30, batch_size=32)
    return (
        model,
        _subset(test, test.y < 5, "digits 0-4 test"),
        _subset(test, test.y >= 5, "5-9", labels=False),
    )


def upscaled(x: np.ndarray) -> np.ndarray:
    """8x8 images as 28x28: each pixel a 3x3 block (24x24), padded by 2 on every side."""
    big = np.kron(x[..., 0], np.ones((3, 3), np.float32))
    return np.pad(big, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.float32)


def mnist_setup() -> tuple[Any, ArrayDataset, ArrayDataset]:
    """The bench CNN on mnist-5k; MNIST's test split (in) and every digit upscaled, without labels (OOD)."""
    model = train_clean(small_cnn(), load_builtin("builtin:mnist-5k:train"), epochs=3)
    digits = load_builtin("builtin:digits")
    return (
        model,
        load_builtin("builtin:mnist-5k:test"),
        from_arrays(upscaled(digits.x), None, name="digits28"),
    )


def independent(model: Any, data: ArrayDataset, ood: ArrayDataset) -> dict[str, float]:
    """The figures from the model's own logits, with scikit-learn's metrics and direct counts."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    def scores(x: np.ndarray) -> dict[str, np.ndarray]:
        z = np.asarray(model.predict(x, batch_size=256, verbose=0), np.float64)
        top = z.max(axis=1)
        log_sum = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        return {"msp": np.exp(top - log_sum), "max_logit": top, "energy": log_sum}

    inside, outside = scores(data.x), scores(ood.x)
    figures = {}
    for name in SCORES:
        s_in, s_out = inside[name], outside[name]
        s = np.concatenate([s_in, s_out])
        is_in = np.r_[np.ones(s_in.size), np.zeros(s_out.size)]
        figures[f"{name}.auroc"] = float(roc_auc_score(is_in, s))
        figures[f"{name}.aupr_in"] = float(average_precision_score(is_in, s))
        figures[f"{name}.aupr_out"] = float(average_precision_score(1 - is_in, -s))
        # The highest threshold that keeps 95% of the in-distribution samples: the k-th largest in-score.
        threshold = np.sort(s_in)[::-1][int(np.ceil(0.95 * s_in.size)) - 1]
        figures[f"{name}.fpr_at_95_tpr"] = float((s_out >= threshold).mean())
    confidence = inside["msp"]
    correct = np.asarray(model.predict(data.x, batch_size=256, verbose=0)).argmax(axis=1) == data.y
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = (confidence > lo) & (confidence <= hi)
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    figures["ece"] = float(ece)
    return figures


def parry(model: Any, data: ArrayDataset, ood: ArrayDataset) -> tuple[dict[str, float], float]:
    options = EvaluationOptions(ood=OODSpec(dataset_id=ood.name))
    started = time.perf_counter()
    result: EvaluationResult = evaluate(
        from_keras(model, sha256="0" * 64), data, options, ood_dataset=ood
    ).result
    seconds = time.perf_counter() - started
    figures = {f"{row.score}.{f}": float(getattr(row, f)) for row in result.ood or [] for f in FIGURES}
    assert result.calibration is not None
    figures["ece"] = result.calibration.ece
    return figures, seconds


def ood_figures() -> list[dict[str, Any]]:
    """Both set-ups: per figure, Parry's value and the independent one; prints the table as it goes."""
    rows = []
    for setup, build in (("digits 0-4 vs 5-9", digits_setup), ("MNIST vs digits 28x28", mnist_setup)):
        model, data, ood = build()
        ours, seconds = parry(model, data, ood)
        theirs = independent(model, data, ood)
        print(f"\n{setup}: {data.num_samples} in, {ood.num_samples} OOD; Parry's evaluate {seconds:.1f} s")  # noqa: T201
        print(f"{'figure':<24} {'Parry':>8} {'sklearn':>8} {'|diff|':>9}")  # noqa: T201
        for name, value in ours.items():
            other = theirs[name]
            print(f"{name:<24} {value:>8.4f} {other:>8.4f} {abs(value - other):>9.2e}")  # noqa: T201
            rows.append({"setup": setup, "figure": name, "parry": value, "sklearn": other})
    return rows


if __name__ == "__main__":
    worst = max(abs(r["parry"] - r["sklearn"]) for r in ood_figures())
    print(f"\nlargest difference: {worst:.2e}")  # noqa: T201
