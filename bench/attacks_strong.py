"""The strong attacks against IBM ART at matched budgets, and each against its cost floor.

The small CNN of the tests, trained clean for 3 epochs and then with fgsm-rs (previous start, eps 0.3, 10
epochs) so that many samples survive eps 0.3 and the attacks do their whole budget, on builtin:mnist-5k:
test, L-inf eps 0.3, batch 250:

- APGD-T (targeted DLR, `--targets` top classes x `--steps`) on `--images` images, against ART's
  AutoProjectedGradientDescent with targeted DLR (a vectorised copy of ART's DLR formula; ART's own
  loops over the batch in Python), one ART run per target class on the samples still robust, as ours.
- Square (`--queries`, p_init 0.8) on the first `--square-images` images, against ART's SquareAttack
  with as many iterations.
- FAB-T (`--targets` x `--steps`) on `--images` images: ART has no FAB, so against its floor only.

Parry runs through `evaluate` (its attack seconds exclude tracing, which a warm worker has done). The floor
of a run is its reported passes priced at one compiled forward+backward pass per backward pass and one
forward-only pass per other forward pass, measured at batch 250 right before the run (the median of 5;
the machine may be shared). Prints a table; never passes or fails on time.

    python bench/attacks_strong.py [--images 500] [--square-images 200] [--targets 3] [--steps 100]
        [--queries 1000] [--skip-art]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from service.domain.datasets import ArrayDataset, load_builtin  # noqa: E402
from service.domain.specs import (  # noqa: E402
    APGDTSpec,
    AttackSpecUnion,
    EvaluationOptions,
    FABTSpec,
    SquareSpec,
    TrainingOptions,
)
from tests.modelzoo import small_cnn, train_clean  # noqa: E402
from tests.unit.workers.attacks import art_peer  # noqa: E402
from workers.evaluation.engine import evaluate  # noqa: E402
from workers.models.loading import from_keras  # noqa: E402
from workers.training import train  # noqa: E402

EPS, BATCH = 0.3, 250


def robust_model(train_data: ArrayDataset, epochs: int) -> Any:
    model = train_clean(small_cnn(), train_data, epochs=3)
    spec = TrainingOptions(
        method="fgsm-rs", fgsm_start="previous", eps=EPS, epochs=epochs, batch_size=100,
        learning_rate=1e-2, lr_schedule="onecycle", validation_samples=200,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        train(from_keras(model), train_data, train_data, spec, checkpoint_dir=Path(tmp))
    return model


def pass_seconds(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Seconds per sample of one compiled forward+backward pass and of one forward pass, at batch 250."""
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    spec = [tf.TensorSpec((None, *x.shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int64)]

    @tf.function(input_signature=spec)
    def gradient(xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(xb)
            value = loss(yb, model(xb, training=False))
        return tape.gradient(value, xb)

    @tf.function(input_signature=spec[:1])
    def forward(xb: tf.Tensor) -> tf.Tensor:
        return model(xb, training=False)

    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(y), BATCH)]

    def timed(run: Callable[[], None]) -> float:
        run()  # trace and warm
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times) / len(y)  # the median, as the attack's run meets the same load

    def gradients() -> None:
        for xb, yb in batches:
            gradient(xb, yb).numpy()

    def forwards() -> None:
        for xb, _ in batches:
            forward(xb).numpy()

    return timed(gradients), timed(forwards)


def parry(model: Any, data: ArrayDataset, spec: AttackSpecUnion) -> tuple[float, float, int, int, float]:
    """Robust accuracy, seconds, forward and backward passes, and the floor of those passes."""
    both, alone = pass_seconds(model, data.x, data.y)
    options = EvaluationOptions(attacks=[spec], batch_size=BATCH, seed=0)
    row = evaluate(from_keras(model), data, options).result.attacks[0]
    forward, backward = row.cost.forward_passes, row.cost.backward_passes
    floor = backward * both + (forward - backward) * alone
    return row.robust_accuracy, row.seconds, forward, backward, floor


def timed_art(run: Callable[[], np.ndarray]) -> tuple[float, float]:
    start = time.perf_counter()
    robust = run()
    return float(robust.mean()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--square-images", type=int, default=200)
    parser.add_argument("--targets", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10, help="fgsm-rs epochs of the model")
    parser.add_argument("--skip-art", action="store_true")
    args = parser.parse_args()

    print(f"options: {vars(args)}")
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}")
    test = load_builtin("builtin:mnist-5k:test")
    model = robust_model(load_builtin("builtin:mnist-5k:train"), args.epochs)
    data, square_data = test.take(args.images), test.take(args.square_images)

    rows: list[tuple[Any, ...]] = []
    apgd_t = APGDTSpec(eps=EPS, steps=args.steps, n_target_classes=args.targets)
    rows.append((f"{apgd_t.label()} ({args.images} images)", *parry(model, data, apgd_t)))
    if not args.skip_art:
        robust, seconds = timed_art(
            lambda: art_peer.targeted_apgd_robust(
                model, data.x, data.y, eps=EPS, steps=args.steps, targets=args.targets, batch_size=BATCH
            )
        )
        rows.append((f"ART targeted APGD-DLR, top {args.targets} ({args.images} images)", robust, seconds))
    square = SquareSpec(eps=EPS, n_queries=args.queries)
    rows.append((f"{square.label()} ({args.square_images} images)", *parry(model, square_data, square)))
    if not args.skip_art:
        robust, seconds = timed_art(
            lambda: art_peer.square_robust(
                model, square_data.x, square_data.y, eps=EPS, queries=args.queries, batch_size=BATCH
            )
        )
        rows.append((f"ART SquareAttack {args.queries} it ({args.square_images} images)", robust, seconds))
    fab = FABTSpec(eps=EPS, steps=args.steps, n_target_classes=args.targets)
    rows.append((f"{fab.label()} ({args.images} images)", *parry(model, data, fab)))

    print("| attack | robust accuracy | seconds | forward | backward | floor s | x floor |")
    print("|---|---|---|---|---|---|---|")
    for label, robust, seconds, *cost in rows:
        if cost:
            forward, backward, floor = cost
            print(
                f"| {label} | {robust:.1%} | {seconds:.1f} | {forward:,} | {backward:,} | {floor:.1f} "
                f"| {seconds / floor:.2f} |"
            )
        else:
            print(f"| {label} | {robust:.1%} | {seconds:.1f} | | | | |")
    if not args.skip_art:
        print(f"APGD-T: ART / Parry wall time = {rows[1][2] / rows[0][2]:.1f}x")
        print(f"Square: ART / Parry wall time = {rows[3][2] / rows[2][2]:.1f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
