"""Natural robustness benchmarks (issue 17). Sections:

corruption_speed: every corruption that applies to grayscale (12) at 5 severities on the first `--samples`
images of builtin:mnist-5k:test, with the bench's clean CNN (tests/modelzoo.small_cnn, 5 epochs, seed 0).
It times generation and forward passes apart, batch by batch as the engine runs them, and divides their sum
by the floor: the 12 x 5 forward passes over the same images alone, through the same compiled function.
The target is at most 5x. It then runs the engine's own corruption step end to end.

ood_figures (bench/natural_ood.py): OOD detection on a digits model trained on classes 0-4 (OOD = 5-9) and
on an MNIST CNN against the 8x8 digits upscaled to 28x28, Parry's figures beside the same figures computed
independently with scikit-learn. Prints tables; never passes or fails on time.

    python bench/natural.py [--sections corruptions,ood] [--samples 1000] [--batch-size 256] [--repeats 3]
        [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from service.domain.corruptions import CORRUPTION_NAMES, SEVERITIES, names_for  # noqa: E402
from service.domain.datasets import load_builtin  # noqa: E402
from service.domain.specs import CorruptionsSpec, EvaluationOptions, FGSMSpec  # noqa: E402
from tests.modelzoo import small_cnn, train_clean  # noqa: E402
from workers.models.loading import LoadedModel, from_keras  # noqa: E402
from workers.natural import runs  # noqa: E402
from workers.natural.corruptions import corrupt  # noqa: E402

TARGET_RATIO = 5.0


def clean_model(cache: Path) -> Any:
    import keras

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "clean.keras"
    if path.exists():
        return keras.models.load_model(path)
    model = train_clean(small_cnn(), load_builtin("builtin:mnist-5k:train"), epochs=5, seed=0)
    model.save(path)
    return model


def corruption_speed(model: LoadedModel, x: np.ndarray, y: np.ndarray, *, batch: int, repeats: int) -> None:
    names = names_for(list(CORRUPTION_NAMES), channels=x.shape[-1])
    items = [(name, s) for name in names for s in SEVERITIES]
    predict = runs._predict_function(model)
    batches = [(start, min(start + batch, x.shape[0])) for start in range(0, x.shape[0], batch)]
    for start, stop in batches[:1]:
        predict(x[start:stop]).numpy()  # trace once, outside the clock

    def floor() -> float:
        started = time.perf_counter()
        for _ in items:
            for start, stop in batches:
                predict(x[start:stop]).numpy()
        return time.perf_counter() - started

    def generate_and_score() -> tuple[float, float, dict[str, float], list[float]]:
        generation = forward = 0.0
        per_name: dict[str, float] = dict.fromkeys(names, 0.0)
        accuracy = []
        for name, severity in items:
            correct = 0
            for start, stop in batches:
                t0 = time.perf_counter()
                images = corrupt(x[start:stop], name, severity, seed=0, low=0.0, high=1.0, first_index=start)
                t1 = time.perf_counter()
                correct += int((predict(images).numpy() == y[start:stop]).sum())
                t2 = time.perf_counter()
                generation += t1 - t0
                forward += t2 - t1
                per_name[name] += t1 - t0
            accuracy.append(correct / x.shape[0])
        return generation, forward, per_name, accuracy

    floors, gens, fwds, per_names = [], [], [], []
    for _ in range(repeats):
        floors.append(floor())
        g, f, per_name, accuracy = generate_and_score()
        gens.append(g)
        fwds.append(f)
        per_names.append(per_name)
    options = EvaluationOptions(
        attacks=[FGSMSpec(eps=0.1)], batch_size=batch, corruptions=CorruptionsSpec(names="all")
    )
    started = time.perf_counter()
    runs.run_corruptions(model, x, y, options, check=lambda: None, advance=lambda units, stage: None)
    engine = time.perf_counter() - started

    fl, g, f = statistics.median(floors), statistics.median(gens), statistics.median(fwds)
    print(f"corruption_speed: {len(names)} corruptions x {len(SEVERITIES)} severities on {x.shape[0]} images "
          f"{x.shape[1:]}, batch {batch}, median of {repeats}")  # fmt: skip
    print(f"  floor ({len(items)} forward passes of every image): {fl:7.2f} s")
    print(f"  generation                                  : {g:7.2f} s")
    print(f"  forward passes on the corrupted images      : {f:7.2f} s")
    ratio = (g + f) / fl
    verdict = "within" if ratio <= TARGET_RATIO else "over"
    print(
        f"  generation + forward over the floor         : {ratio:7.2f}x "
        f"({verdict} the {TARGET_RATIO:g}x target)"
    )
    print(f"  the engine's corruption step end to end     : {engine:7.2f} s ({engine / fl:.2f}x the floor)")
    print("  generation per corruption (5 severities, median):")
    for name in names:
        seconds = statistics.median(p[name] for p in per_names)
        accs = " ".join(f"{a:.3f}" for a in accuracy[names.index(name) * 5 : names.index(name) * 5 + 5])
        print(f"    {name:18s} {seconds:6.2f} s   accuracy by severity: {accs}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="corruptions,ood")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache", type=Path, default=Path("bench-models"), help="the trained model is kept here"
    )
    args = parser.parse_args()
    sections = args.sections.split(",")
    if "corruptions" in sections:
        data = load_builtin("builtin:mnist-5k:test")
        x = np.asarray(data.x[: args.samples], np.float32)
        y = np.asarray(data.y[: args.samples])
        model = from_keras(clean_model(args.cache))
        corruption_speed(model, x, y, batch=args.batch_size, repeats=args.repeats)
    if "ood" in sections:
        from bench.natural_ood import ood_figures

        worst = max(abs(row["parry"] - row["sklearn"]) for row in ood_figures())
        print(f"\nOOD: largest difference between Parry and scikit-learn: {worst:.2e}")


if __name__ == "__main__":
    main()
