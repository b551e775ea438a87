"""A few clean and adversarial samples per class, kept for the report page's example grid.

The evaluation keeps the adversarial inputs of the samples `select_examples` picks (for every attack
at every eps); `example_arrays` keeps, for each (norm, eps), the attack that fooled the model most, and
`examples_npz` packs them as the job artifact `adversarial_examples.npz`:

    x_clean (k, *sample)   label, clean_pred, index (k,)   input_range (2,)
    x_adv (m, k, *sample)  adv_pred (m, k)   attack, norm (m,) strings   eps (m,)

Only numeric and fixed-width string arrays: the API reads it with `allow_pickle=False`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.domain.artifacts import EXAMPLES_ARTIFACT

__all__ = [
    "EXAMPLES_ARTIFACT",
    "ExampleKeeper",
    "KeptRun",
    "example_arrays",
    "examples_npz",
    "keep_rows",
    "select_examples",
]

# The artifact stays small whatever the sample size: at most this many input values per image set.
MAX_VALUES_PER_SET = 1_000_000


@dataclass(frozen=True)
class KeptRun:
    """One attack at one eps, restricted to the selected samples."""

    name: str
    norm: str
    eps: float
    robust_accuracy: float
    x_adv: np.ndarray  # (k, *sample)
    adv_pred: np.ndarray  # (k,)


def select_examples(
    labels: np.ndarray,
    clean_pred: np.ndarray,
    *,
    per_class: int = 2,
    limit: int = 20,
    sample_size: int = 1,
) -> np.ndarray:
    """Indices of up to `per_class` samples of each class (clean-correct ones first, in data order),
    at most `limit` in all and fewer for large samples, sorted by class."""
    labels, clean_pred = np.asarray(labels), np.asarray(clean_pred)
    limit = max(0, min(limit, MAX_VALUES_PER_SET // max(sample_size, 1)))
    chosen: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        correct = members[clean_pred[members] == c]
        wrong = members[clean_pred[members] != c]
        chosen += [int(i) for i in np.concatenate([correct, wrong])[:per_class]]
    if len(chosen) > limit:
        # Keep every class represented before a second sample of any.
        order = sorted(range(len(chosen)), key=lambda j: (j % per_class if per_class else 0, j))
        chosen = sorted(chosen[j] for j in order[:limit])
    return np.array(sorted(chosen, key=lambda i: (int(labels[i]), i)), dtype=np.int64)


def example_arrays(
    x_clean: np.ndarray,
    labels: np.ndarray,
    clean_pred: np.ndarray,
    index: np.ndarray,
    runs: Sequence[KeptRun],
    *,
    input_range: tuple[float, float],
) -> dict[str, np.ndarray]:
    """The arrays of `adversarial_examples.npz`: per (norm, eps), the run with the lowest robust accuracy."""
    strongest: dict[tuple[str, float], KeptRun] = {}
    for run in runs:
        key = (run.norm, float(run.eps))
        if key not in strongest or run.robust_accuracy < strongest[key].robust_accuracy:
            strongest[key] = run
    kept = [strongest[key] for key in sorted(strongest)]
    k = len(index)
    shape = tuple(np.asarray(x_clean).shape[1:])
    return {
        "x_clean": np.asarray(x_clean, np.float32),
        "label": np.asarray(labels, np.int64),
        "clean_pred": np.asarray(clean_pred, np.int64),
        "index": np.asarray(index, np.int64),
        "input_range": np.asarray(input_range, np.float64),
        "x_adv": (
            np.stack([np.asarray(r.x_adv, np.float32) for r in kept])
            if kept
            else np.zeros((0, k, *shape), np.float32)
        ),
        "adv_pred": (
            np.stack([np.asarray(r.adv_pred, np.int64) for r in kept]) if kept else np.zeros((0, k), np.int64)
        ),
        "attack": np.array([r.name for r in kept], dtype=np.str_),
        "norm": np.array([r.norm for r in kept], dtype=np.str_),
        "eps": np.array([r.eps for r in kept], dtype=np.float64),
    }


def examples_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as compressed `.npz` bytes, ready for `ArtifactStore.write_job_artifact`."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def keep_rows(kept: np.ndarray, keep: np.ndarray, chosen: np.ndarray, x_adv: np.ndarray) -> None:
    """Copy into `kept` the adversarial rows of a batch (`chosen` indices) that belong to `keep`."""
    batch = np.asarray(x_adv)
    for position, index in enumerate(keep):
        hit = np.flatnonzero(chosen == index)
        if hit.size:
            kept[position] = batch[hit[0]]


class ExampleKeeper:
    """Keeps, during an evaluation, the adversarial inputs of the selected samples for every attack run.

    The evaluation calls `start` once per (attack, eps) run, `record` after each attacked batch, and
    `arrays` at the end; samples never attacked (misclassified when clean) keep their clean input.
    """

    def __init__(self, indices: np.ndarray) -> None:
        self.indices = np.asarray(indices, np.int64)
        self.kept: list[np.ndarray] = []

    @classmethod
    def for_samples(
        cls, labels: np.ndarray, clean_pred: np.ndarray, per_class: int, sample_shape: tuple[int, ...]
    ) -> ExampleKeeper:
        size = int(np.prod(sample_shape)) if sample_shape else 1
        return cls(select_examples(labels, clean_pred, per_class=per_class, sample_size=size))

    def start(self, x: np.ndarray) -> None:
        self.kept.append(np.array(x[self.indices], dtype=np.float32, copy=True))

    def record(self, chosen: np.ndarray, x_adv: np.ndarray) -> None:
        keep_rows(self.kept[-1], self.indices, chosen, x_adv)

    def carry_over(self, broken: np.ndarray) -> None:
        """The run just started keeps the previous run's inputs for the samples `broken` (a mask) there."""
        if len(self.kept) > 1:
            mine = broken[self.indices]
            self.kept[-1][mine] = self.kept[-2][mine]

    def arrays(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        clean_pred: np.ndarray,
        runs: Sequence[Any],
        robust_accuracies: Sequence[float],
        *,
        input_range: tuple[float, float],
    ) -> dict[str, np.ndarray]:
        """The artifact's arrays; `runs` (with .spec, .eps, .adv_pred) in the order they were started."""
        if len(runs) != len(self.kept) or len(robust_accuracies) != len(runs):
            raise ValueError("every attack run must be started once before the examples are collected")
        kept = [
            KeptRun(run.spec.name, run.spec.norm, float(run.eps), float(acc), adv, run.adv_pred[self.indices])
            for run, acc, adv in zip(runs, robust_accuracies, self.kept, strict=True)
        ]
        i = self.indices
        return example_arrays(x[i], labels[i], clean_pred[i], i, kept, input_range=input_range)
