"""What a sharded evaluation does with the engine (workers/sandbox/calls.py, workers/runners/sharded.py),
in one process: attack ranges of global batches, save each run's arrays, merge them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.domain.datasets import ArrayDataset
from service.domain.specs import EvaluationOptions
from workers.evaluation import engine
from workers.evaluation.run_arrays import run_arrays
from workers.models.loading import LoadedModel
from workers.runners.sharded import merge_runs

Report = tuple[dict[str, Any], dict[str, np.ndarray]]


def merged_and_whole(
    model: LoadedModel, data: ArrayDataset, options: EvaluationOptions, spans: Sequence[range]
) -> tuple[Report, Report]:
    """(result body, per-sample arrays) of the shards' merge and of the whole run, timings left out."""
    x, y, warnings = engine._prepare(model, data, options)
    tracker = engine._Tracker(None, None)
    clean_pred, zero, bad, _ = engine._clean_pass(model, x, y, options.batch_size, tracker)
    parts = []
    for span in spans:
        runs = engine.attack_runs(model, x, y, clean_pred, options, tracker, batches=span)
        parts.append({k: v for i, run in enumerate(runs) for k, v in run_arrays(run, i).items()})
    merged = merge_runs(options, clean_pred, list(spans), parts)
    whole = engine.attack_runs(model, x, y, clean_pred, options, tracker)

    def report(runs: Any) -> Report:
        outcome = engine.summarize(
            runs, y, clean_pred, zero, bad, options, warnings=warnings, num_classes=10, model_sha256="m",
            dataset_sha256="d", seconds=0.0,
        )  # fmt: skip
        body = outcome.result.model_dump(mode="json")
        for row in [*body["attacks"], *body["minimum_norm"]]:
            row.pop("seconds"), row.pop("samples_per_second", None)
            for stage in row.get("stages") or []:
                stage.pop("seconds")
        return body, outcome.per_sample

    return report(merged), report(whole)
