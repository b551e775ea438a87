"""Training data as the model takes it: shape and range checks, the hold-out split, the validation subset."""

from __future__ import annotations

import hashlib

import numpy as np

from service.domain.datasets import ArrayDataset, in_input_range
from workers.training.errors import TrainingError

# Seed-path tags, apart from every epoch index.
_SUBSET_TAG, _HOLDOUT_TAG = 0x5B5E7, 0x401D0


def split_validation(
    data: ArrayDataset, *, fraction: float = 0.1, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """A seeded hold-out: (training part, validation part), for a job given no validation dataset."""
    n = data.num_samples
    if n < 2:
        raise TrainingError("The training dataset needs at least 2 samples to hold some out for validation.")
    held = min(max(1, round(fraction * n)), n - 1)
    order = np.random.default_rng([seed, _HOLDOUT_TAG]).permutation(n)
    parts = []
    for name, idx in (("train", np.sort(order[held:])), ("validation", np.sort(order[:held]))):
        digest = hashlib.sha256(f"{data.sha256}:{name}:{fraction}:{seed}".encode()).hexdigest()
        parts.append(ArrayDataset(data.x[idx], data.y[idx], digest, f"{data.name}:{name}", data.unit_range))
    return parts[0], parts[1]


def prepare(
    data: ArrayDataset,
    what: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    input_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """`data` as float32 in the model's input shape with int64 labels, or TrainingError saying why not.

    `what` names the dataset in messages ("training", "validation").
    """
    if data.num_samples == 0:
        raise TrainingError(f"The {what} dataset has no samples.")
    data = in_input_range(data, input_range)
    x = np.asarray(data.x, dtype=np.float32)
    if tuple(x.shape[1:]) != input_shape:
        if int(np.prod(x.shape[1:])) != int(np.prod(input_shape)):
            raise TrainingError(
                f"The {what} samples have shape {tuple(x.shape[1:])} but the model takes {input_shape}."
            )
        x = x.reshape((x.shape[0], *input_shape))
    y = np.asarray(data.y, dtype=np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise TrainingError(
            f"The {what} labels range over [{y.min()}, {y.max()}] but the model has {num_classes} classes."
        )
    lo, hi = input_range
    tolerance = 1e-6 * (hi - lo)
    if float(x.min()) < lo - tolerance or float(x.max()) > hi + tolerance:
        raise TrainingError(
            f"The {what} samples have values in [{float(x.min()):g}, {float(x.max()):g}] outside "
            f"input_range [{lo:g}, {hi:g}]; set input_range to the model's input range."
        )
    return np.clip(x, lo, hi), y


def validation_subset(n: int, wanted: int | None, seed: int) -> np.ndarray:
    """Indices of the validation samples checked every epoch: all, or a fixed seeded subset."""
    if wanted is None or wanted >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, _SUBSET_TAG])
    return np.sort(rng.choice(n, size=wanted, replace=False))
