"""Adversarial training: robustness bought per method and its wall time, beside a clean-trained baseline.

The small CNN of the tests is trained clean for 5 epochs on the 4,000 images of builtin:mnist-5k:train
(the baseline), then each method continues from those weights: eps 0.3 L-inf, ramp over the first third,
Adam with a one-cycle schedule peaking at 1e-2, batch 100, a per-epoch PGD-10 check on 200 training
images. `fgsm-rs:previous` in `--methods` is fgsm-rs with `fgsm_start: previous`. Every model is scored on
the 1,000 test images: clean accuracy and PGD-40 robust accuracy (step 0.01, random start) at eps 0.3, 0.2
and 0.1. Prints a table; never passes or fails on time.

    python bench/training.py [--epochs 20] [--methods pgd,fgsm-rs,fgsm-rs:previous,trades] [--steps 10]
        [--lr 1e-2] [--lr-schedule onecycle] [--step-size S] [--ramp EPOCHS] [--batch-size 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.domain.datasets import ArrayDataset, load_builtin  # noqa: E402
from service.domain.specs import EvaluationOptions, PGDSpec, TrainingOptions  # noqa: E402
from tests.modelzoo import small_cnn, train_clean  # noqa: E402
from workers.evaluation.engine import evaluate  # noqa: E402
from workers.models.loading import LoadedModel, from_keras  # noqa: E402
from workers.training import train  # noqa: E402

EVAL_EPS = [0.3, 0.2, 0.1]


def score(model: LoadedModel, test: ArrayDataset) -> tuple[float, list[float]]:
    options = EvaluationOptions(attacks=[PGDSpec(eps=EVAL_EPS, steps=40, step_size=0.01)], batch_size=250)
    result = evaluate(model, test, options).result
    return result.clean_accuracy, [a.robust_accuracy for a in result.attacks]


def copy_of(model: Any) -> Any:
    clone = small_cnn()
    clone.set_weights(model.get_weights())
    return clone


def recipe(entry: str, *, epochs: int, **fields: Any) -> TrainingOptions:
    """The bench recipe for `pgd`, `fgsm-rs`, `fgsm-rs:previous` (fgsm_start previous) or `trades`;
    `fields` override its defaults (the options of `main`)."""
    method, _, start = entry.partition(":")
    defaults: dict[str, Any] = {
        "eps": 0.3, "steps": 10, "batch_size": 100, "learning_rate": 1e-2, "lr_schedule": "onecycle",
        "validation_samples": 200, "seed": 0,
    }  # fmt: skip
    return TrainingOptions.model_validate(
        {**defaults, **fields, "method": method, "fgsm_start": start or "random", "epochs": epochs}
    )


def train_recipe(baseline: Any, train_data: ArrayDataset, spec: TrainingOptions) -> tuple[LoadedModel, Any]:
    """A copy of the clean baseline trained with `spec`, and the training's result."""
    model = from_keras(copy_of(baseline))
    with tempfile.TemporaryDirectory() as tmp:
        # The per-epoch check (the overfitting guard's input) reads training images, never the test split.
        result = train(model, train_data, train_data, spec, checkpoint_dir=Path(tmp)).result
    return model, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--methods", default="pgd,fgsm-rs,fgsm-rs:previous,trades")
    parser.add_argument("--steps", type=int, default=10, help="inner steps of pgd and trades")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--clean-epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (peak for onecycle)")
    parser.add_argument("--lr-schedule", default="onecycle", choices=["constant", "cosine", "onecycle"])
    parser.add_argument("--step-size", type=float, default=None, help="inner step at full eps")
    parser.add_argument("--ramp", type=float, default=None, help="eps ramp-up epochs (default a third)")
    parser.add_argument("--validation-samples", type=int, default=200, help="per-epoch PGD-10 check")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="of the baseline's and every method's training")
    args = parser.parse_args()

    train_data = load_builtin("builtin:mnist-5k:train")
    test = load_builtin("builtin:mnist-5k:test")
    print(f"options: {vars(args)}")
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}")
    start = time.perf_counter()
    baseline = train_clean(small_cnn(), train_data, epochs=args.clean_epochs, seed=args.seed)
    rows = [
        (
            "clean (baseline)",
            args.clean_epochs,
            time.perf_counter() - start,
            *score(from_keras(baseline), test),
            "",
        )
    ]

    for entry in args.methods.split(","):
        method = entry.partition(":")[0]
        spec = recipe(
            entry, epochs=args.epochs, eps=args.eps, steps=args.steps, batch_size=args.batch_size,
            learning_rate=args.lr, lr_schedule=args.lr_schedule, step_size=args.step_size,
            eps_ramp_epochs=args.ramp, validation_samples=args.validation_samples, seed=args.seed,
        )  # fmt: skip
        model, result = train_recipe(baseline, train_data, spec)
        label = (
            f"fgsm-rs ({spec.fgsm_start} start)" if method == "fgsm-rs" else f"{method} ({args.steps} steps)"
        )
        rows.append(
            (label, result.epochs_completed, result.seconds, *score(model, test), "; ".join(result.notes))
        )
        curve = [round(h.robust_accuracy, 3) for h in result.history]
        print(f"  {label}: per-epoch validation robust accuracy {curve}")

    columns = " | ".join(f"PGD-40 eps {e:g}" for e in EVAL_EPS)
    head = f"| method | epochs | wall s | clean | {columns} | notes |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, epochs, seconds, clean, robust, notes in rows:
        cells = " | ".join(f"{r:.1%}" for r in robust)
        print(f"| {label} | {epochs} | {seconds:.0f} | {clean:.1%} | {cells} | {notes} |")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
