"""Checkpoints of a training run: weights, optimizer state, position and history in one file.

One `.npz` written to a temporary name and renamed into place, so a worker killed mid-write leaves the
previous checkpoint whole. Random numbers are derived statelessly from (seed, epoch, batch), so the
position is all the random state a resumed run needs. The weights of the best epoch so far live in a
separate file named by the checkpoint (written before it, removed after it stops naming them).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.npz"
_FORMAT = 1


@dataclass
class RunState:
    """Where a run stands; `epoch` epochs are complete and `batch` batches of the next one are done."""

    fingerprint: str
    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False
    stopped_early: bool = False
    rolled_back: bool = False
    best_file: str | None = None
    uploaded: dict[str, float] | None = None  # the uploaded model on the validation check (epoch 0)
    first_loss: float | None = None  # the run's first batch loss: what an exploding loss is measured by
    kept: int | None = None  # 0-based epoch a divergence rolled back to
    warnings: list[str] = field(default_factory=list)


@dataclass
class Checkpoint:
    state: RunState
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    perturbations: np.ndarray | None = None  # fgsm-rs with `fgsm_start: previous` (starts.py)


def save(directory: Path, checkpoint: Checkpoint) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i}": w for i, w in enumerate(checkpoint.weights)}
    arrays.update({f"o{i}": o for i, o in enumerate(checkpoint.optimizer)})
    if checkpoint.perturbations is not None:
        arrays["perturbations"] = checkpoint.perturbations
    meta = {"format": _FORMAT, "weights": len(checkpoint.weights), "optimizer": len(checkpoint.optimizer)}
    arrays["meta"] = np.array(json.dumps({**meta, "state": asdict(checkpoint.state)}))
    _atomic_savez(directory / CHECKPOINT, arrays)
    _remove_stale_best(directory, keep=checkpoint.state.best_file)


def load(directory: Path) -> Checkpoint | None:
    """The last checkpoint in `directory`, or None when there is none or it cannot be read."""
    path = directory / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != _FORMAT:
                return None
            weights = [npz[f"w{i}"] for i in range(meta["weights"])]
            optimizer = [npz[f"o{i}"] for i in range(meta["optimizer"])]
            perturbations = npz["perturbations"] if "perturbations" in npz.files else None
        state = RunState(**meta["state"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    return Checkpoint(state, weights, optimizer, perturbations)


def save_best(directory: Path, epoch: int, weights: list[np.ndarray]) -> str:
    """Write the weights of `epoch` (1-based) and return the file name a RunState refers to them by."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"best-epoch-{epoch}.npz"
    _atomic_savez(directory / name, {f"w{i}": w for i, w in enumerate(weights)})
    return name


def load_best(directory: Path, name: str, count: int) -> list[np.ndarray]:
    with np.load(directory / name, allow_pickle=False) as npz:
        return [npz[f"w{i}"] for i in range(count)]


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _remove_stale_best(directory: Path, *, keep: str | None) -> None:
    for old in directory.glob("best-epoch-*.npz"):
        if old.name != keep:
            old.unlink(missing_ok=True)
