"""`parry demo`: a small CNN trained in seconds on a built-in dataset, written as `demo.keras`.

The README's walk-through starts from it, so a new user needs no model of their own to see a first
report. Like `parry evaluate`, the command reaches the `parry` parser through the `parry.commands`
entry point; building the parser imports neither TensorFlow nor NumPy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from service.cli.common import EXIT_OK, CommandError, Commands, out
from service.cli.installs import require_install
from service.domain.builtins import is_builtin, parse_builtin
from service.domain.verdicts import pct

DEFAULT_DATASET = "builtin:digits"


def add_demo_command(commands: Commands) -> None:
    """The `parry.commands` entry point: adds `demo` to the `parry` parser."""
    cmd = commands.add_parser(
        "demo",
        help="train a small demo model in seconds and write it as demo.keras",
        description="Train a small CNN on a built-in dataset's :train split (the 8x8 digits by default), "
        "report its clean accuracy on the :test split, and save it as a .keras file to try Parry with.",
    )
    cmd.add_argument("--output", "-o", type=Path, default=Path("demo.keras"), help="default demo.keras")
    cmd.add_argument(
        "--dataset", default=DEFAULT_DATASET, help="builtin:digits (default, seconds) or builtin:mnist-5k"
    )
    cmd.add_argument("--epochs", type=int, default=12, help="default 12")
    cmd.add_argument("--seed", type=int, default=0, help="the same seed gives the same model (default 0)")
    cmd.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    cmd.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up log lines")
    cmd.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    require_install("demo")
    if not is_builtin(args.dataset):
        raise CommandError(
            f"--dataset takes a built-in id (builtin:digits, builtin:mnist-5k), not {args.dataset!r}"
        )
    name, split = parse_builtin(args.dataset)
    if split is not None:
        raise CommandError(
            f"--dataset takes a built-in without a split (builtin:{name}): it trains on :train"
        )
    if not 1 <= args.epochs <= 200:
        raise CommandError(f"--epochs must be between 1 and 200, got {args.epochs}")
    if args.output.exists() and not args.force:
        raise CommandError(f"{args.output} exists; pass --force to overwrite it, or --output another file")
    from workers.evaluation.cli import tensorflow_start_up

    with tensorflow_start_up(verbose=args.verbose):
        import keras  # noqa: F401 (TensorFlow loads here, its start-up lines kept off stderr)

    started = time.monotonic()
    model, accuracy = train_demo_model(f"builtin:{name}", epochs=args.epochs, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    shape = "×".join(str(d) for d in model.input_shape[1:])
    out(
        f"wrote {args.output}: a small CNN for builtin:{name} ({shape} inputs in [0, 1], "
        f"{model.output_shape[-1]} classes, logits), clean accuracy {pct(accuracy)} on builtin:{name}:test, "
        f"trained in {time.monotonic() - started:.1f} s"
    )
    out(
        f"next: parry upload-model {args.output}, or parry submit --model {args.output} "
        f"--dataset builtin:{name}:test --attack 'pgd:eps=0.1,steps=20' --wait"
    )
    return EXIT_OK


def train_demo_model(dataset_id: str, *, epochs: int, seed: int) -> tuple[Any, float]:
    """A Conv-Pool-Conv-Dense CNN trained on `dataset_id`:train; returns it and its `:test` accuracy."""
    import keras
    import numpy as np

    from service.domain.datasets import load_builtin

    train, test = load_builtin(f"{dataset_id}:train"), load_builtin(f"{dataset_id}:test")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(train.sample_shape),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(train.num_classes),
        ],
        name="parry_demo",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(train.x, train.y, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    predictions = np.argmax(model.predict(test.x, batch_size=512, verbose=0), axis=1)
    return model, float(np.mean(predictions == test.y))
