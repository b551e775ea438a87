"""`parry evaluate`: one evaluation in this process, from files on disk, no server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from service.domain.datasets import ArrayDataset, file_sha256, load_dataset
from service.domain.results import Progress
from service.domain.specs import EvaluationOptions
from workers.evaluation.engine import EvaluationError, EvaluationOutcome, evaluate
from workers.models.errors import ModelLoadError
from workers.models.loading import OutputKind, load_model

PROBE_SAMPLES = 32


class LocalEvaluationError(Exception):
    """The model or the data cannot be evaluated; the message is one sentence."""


def run_local_evaluation(
    model_path: Path,
    dataset_ref: str | ArrayDataset,
    options: EvaluationOptions,
    *,
    output: OutputKind | str = "auto",
    progress: Callable[[Progress], None] | None = None,
    ood_dataset: ArrayDataset | None = None,
) -> EvaluationOutcome:
    dataset = dataset_ref if isinstance(dataset_ref, ArrayDataset) else load_dataset(dataset_ref)
    try:
        model = load_model(
            model_path,
            output=output,  # type: ignore[arg-type]
            sha256=path_sha256(model_path),
            probe=dataset.x[:PROBE_SAMPLES],
        )
        return evaluate(model, dataset, options, progress=progress, ood_dataset=ood_dataset)
    except (ModelLoadError, EvaluationError) as exc:
        raise LocalEvaluationError(str(exc)) from exc


def path_sha256(path: Path) -> str:
    """sha256 of a file; for a SavedModel directory, of its files' relative paths and contents in order."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode())
        digest.update(bytes.fromhex(file_sha256(item)))
    return digest.hexdigest()
