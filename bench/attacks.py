"""Attack throughput: our engine (Keras and SavedModel paths) against the cost floor and IBM ART.

FGSM and PGD-40 L-inf at eps 0.3 on the 1,000 images of builtin:mnist-5k:test, batch 250, on the small CNN
of the tests (trained here for 3 epochs). The floor of PGD-40 is 40 compiled forward+backward passes per
sample; FGSM's is one. Prints a table; never passes or fails on time.

The machine may be shared, so a floor pass is timed right next to every engine run: "x floor speed" is
floor time / engine time with that neighbouring floor, and "x ART" compares floor-normalised times.
"pure attack" attacks all 1,000 images (like the floor and ART); "full work" also turns PGD's early stop
off, so every sample takes all 40 steps; "evaluate" is the attack time inside `evaluate`, which skips
the clean-misclassified images.

    python bench/attacks.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from service.domain.datasets import ArrayDataset, load_builtin  # noqa: E402
from service.domain.specs import EvaluationOptions, FGSMSpec, PGDSpec  # noqa: E402
from tests.modelzoo import small_cnn, train_clean  # noqa: E402
from workers.attacks import FGSM, PGD, Attack  # noqa: E402
from workers.evaluation.engine import evaluate  # noqa: E402
from workers.models.loading import LoadedModel, from_keras, load_model  # noqa: E402

EPS, STEPS, STEP_SIZE, BATCH = 0.3, 40, 0.01, 250


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_meter(model: Any, data: ArrayDataset) -> Callable[[], float]:
    """A function timing one compiled forward+backward pass over the whole set (batches of 250).

    The machine is shared, so the floor is measured again right before each engine's run and each ratio
    uses the floor measured next to it.
    """
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def gradient(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y, model(x, training=False))
        return tape.gradient(value, x)

    batches = [
        (tf.constant(data.x[i : i + BATCH]), tf.constant(data.y[i : i + BATCH]))
        for i in range(0, len(data.y), BATCH)
    ]
    for x, y in batches:
        gradient(x, y).numpy()  # trace

    def one_pass() -> None:
        for x, y in batches:
            gradient(x, y).numpy()

    return lambda: median_seconds(one_pass, 7)


def ours_evaluate(model: LoadedModel, data: ArrayDataset, spec: FGSMSpec | PGDSpec, repeats: int) -> float:
    """Attack seconds inside `evaluate` (clean-misclassified samples are not attacked), median of runs."""
    options = EvaluationOptions(attacks=[spec], batch_size=BATCH)
    evaluate(model, data, options)  # compile and warm up
    return statistics.median(evaluate(model, data, options).result.attacks[0].seconds for _ in range(repeats))


def ours_pure(model: LoadedModel, data: ArrayDataset, attack: Attack, repeats: int) -> tuple[float, float]:
    """Every sample attacked, batch by batch: like for like with the floor and ART. (seconds, accuracy)."""
    attack(model, data.x[:BATCH], data.y[:BATCH], eps=EPS, seed=0)
    correct = []

    def run() -> None:
        correct.clear()
        for i in range(0, len(data.y), BATCH):
            out = attack(model, data.x[i : i + BATCH], data.y[i : i + BATCH], eps=EPS, seed=(0, i))
            correct.append(out.pred == data.y[i : i + BATCH])

    return median_seconds(run, repeats), float(np.concatenate(correct).mean())


def art_seconds(model: Any, data: ArrayDataset, kind: str, repeats: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTorch not found", category=UserWarning)
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    if kind == "pgd":
        attack: Any = ProjectedGradientDescent(
            classifier, norm=np.inf, eps=EPS, eps_step=STEP_SIZE, max_iter=STEPS, num_random_init=1,
            batch_size=BATCH, verbose=False,
        )  # fmt: skip
    else:
        attack = FastGradientMethod(classifier, norm=np.inf, eps=EPS, batch_size=BATCH)
    labels = np.eye(10, dtype=np.float32)[data.y]
    attack.generate(data.x[:BATCH], labels[:BATCH])  # warm up
    result: list[np.ndarray] = []
    seconds = median_seconds(lambda: result.append(attack.generate(data.x, labels)), repeats)
    accuracy = float((np.argmax(classifier.predict(result[-1], batch_size=BATCH), axis=1) == data.y).mean())
    return seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = args.repeats

    train, test = load_builtin("builtin:mnist-5k:train"), load_builtin("builtin:mnist-5k:test")
    keras_model = train_clean(small_cnn(), train, epochs=3)
    n = test.num_samples
    floor = floor_meter(keras_model, test)
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, TF {tf.__version__}")
    print(f"{n} images, batch {BATCH}; one forward+backward pass over all: {floor():.3f} s")

    # (attack, engine, seconds, robust accuracy, ART seconds / its floor pass, floor pass measured alongside)
    rows: list[tuple[str, str, float, float | None, float | None, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        keras_model.export(Path(tmp) / "saved_model", verbose=False)
        paths = {"keras": from_keras(keras_model), "saved_model": load_model(Path(tmp) / "saved_model")}
        full_pgd = PGD(steps=STEPS, step_size=STEP_SIZE, early_stop=False)
        specs: dict[str, tuple[FGSMSpec | PGDSpec, list[tuple[str, Attack]], int]] = {
            "fgsm": (FGSMSpec(eps=EPS), [("pure attack", FGSM())], 1),
            "pgd": (
                PGDSpec(eps=EPS, steps=STEPS, step_size=STEP_SIZE),
                [
                    ("full work, no early stop", full_pgd),
                    ("pure attack", PGD(steps=STEPS, step_size=STEP_SIZE)),
                ],
                STEPS,
            ),
        }
        for kind, (spec, attacks, passes) in specs.items():
            one = floor()
            rows.append((kind, "floor", one * passes, None, None, one))
            art, art_acc = art_seconds(keras_model, test, kind, repeats)
            art_floor = floor()
            rows.append((kind, "ART 1.20 (Keras)", art, art_acc, None, art_floor))
            art_relative = art / art_floor  # ART's time in floor passes, so load changes cancel out
            for path, model in paths.items():
                for label, attack in attacks:
                    pure, acc = ours_pure(model, test, attack, repeats)
                    rows.append((kind, f"ours, {label} ({path})", pure, acc, art_relative, floor()))
                seconds = ours_evaluate(model, test, spec, repeats)
                rows.append((kind, f"ours, evaluate ({path})", seconds, None, art_relative, floor()))

    header = "| attack | engine | seconds | samples/s | floor s | x floor | x ART (normalised) | robust acc |"
    print(f"\n{header}\n|{'---|' * 8}")
    for kind, engine, seconds, accuracy, art, one in rows:
        passes = STEPS if kind == "pgd" else 1
        ratio = one * passes / seconds
        vs_art = f"{art * one / seconds:.2f}" if art else ""
        acc = f"{accuracy:.1%}" if accuracy is not None else ""
        print(
            f"| {kind} | {engine} | {seconds:.2f} | {n / seconds:.0f} | {one * passes:.2f} | {ratio:.2f} "
            f"| {vs_art} | {acc} |"
        )


if __name__ == "__main__":
    main()
