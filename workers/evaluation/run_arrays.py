"""An attack run as the arrays a shard saves, and the whole evaluation's run merged back from them.

A shard (workers/runners/sharded.py) attacks a range of global batches of the clean-correct samples; its
arrays hold every sample, but only its batches' rows are its own. Passes, queries, seconds and an
ensemble's stage work are sums, so the merge adds them up over the shards; a minimum-norm run's
per-sample norms are merged like the other per-sample arrays, and its figures derived afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.domain.specs import AttackSpecBase
from workers.evaluation.robustness import AttackRun, StageWork


def run_arrays(run: AttackRun, i: int) -> dict[str, np.ndarray]:
    """The i-th run of a shard as named arrays (`np.savez` keys)."""
    arrays = {
        f"adv_pred_{i}": run.adv_pred,
        f"fooled_{i}": run.fooled,
        f"linf_{i}": run.linf,
        f"l2_{i}": run.l2,
        f"attacked_{i}": run.attacked,
        f"goal_{i}": run.goal,
        f"passes_{i}": np.array([run.forward, run.backward, -1 if run.queries is None else run.queries]),
        f"seconds_{i}": np.array(run.seconds),
        f"cumulative_{i}": np.array(run.cumulative),
        f"last_restart_broken_{i}": np.array(run.last_restart_broken),
    }
    if run.norms is not None:
        arrays[f"norms_{i}"] = run.norms
    if run.stages is not None and run.broken_by is not None:
        arrays[f"broken_by_{i}"] = run.broken_by
        arrays[f"stage_work_{i}"] = np.array(
            [[getattr(s, name) for name in StageWork.FIELDS] for s in run.stages], np.int64
        ).reshape(len(run.stages), len(StageWork.FIELDS))
        arrays[f"stage_seconds_{i}"] = np.array([s.seconds for s in run.stages], np.float64)
    return arrays


def merged_run(
    spec: AttackSpecBase,
    index: int,
    eps: float,
    i: int,
    clean_pred: np.ndarray,
    batches: Sequence[range],
    parts: Sequence[dict[str, np.ndarray]],
    batch_size: int,
) -> AttackRun:
    """The i-th run of the whole evaluation from the shards' arrays (shard k computed `batches[k]`)."""
    n = clean_pred.shape[0]
    attacked, goal = parts[0][f"attacked_{i}"], parts[0][f"goal_{i}"]
    adv_pred, fooled = clean_pred.copy(), np.zeros(n, bool)
    linf, l2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    ensemble = f"broken_by_{i}" in parts[0]
    broken_by = np.zeros(n, np.int8) if ensemble else None
    indices = np.flatnonzero(attacked)
    passes = np.zeros(3, np.int64)
    seconds = 0.0
    last_restart_broken = 0
    work = np.zeros_like(parts[0][f"stage_work_{i}"]) if ensemble else None
    stage_seconds = np.zeros_like(parts[0][f"stage_seconds_{i}"]) if ensemble else None
    norms = np.where(attacked, np.inf, 0.0) if f"norms_{i}" in parts[0] else None
    for span, part in zip(batches, parts, strict=True):
        mine = indices[span.start * batch_size : span.stop * batch_size]
        if norms is not None:
            norms[mine] = part[f"norms_{i}"][mine]
        adv_pred[mine] = part[f"adv_pred_{i}"][mine]
        fooled[mine] = part[f"fooled_{i}"][mine]
        linf[mine] = part[f"linf_{i}"][mine]
        l2[mine] = part[f"l2_{i}"][mine]
        passes += part[f"passes_{i}"].astype(np.int64)
        seconds += float(part[f"seconds_{i}"])  # attack time summed over the shards' workers
        last_restart_broken += int(part[f"last_restart_broken_{i}"])
        if broken_by is not None and work is not None and stage_seconds is not None:
            broken_by[mine] = part[f"broken_by_{i}"][mine]
            work += part[f"stage_work_{i}"]
            stage_seconds += part[f"stage_seconds_{i}"]
    stages = None
    if work is not None and stage_seconds is not None:
        stages = [
            StageWork(
                **{name: int(v) for name, v in zip(StageWork.FIELDS, row, strict=True)}, seconds=float(t)
            )
            for row, t in zip(work, stage_seconds, strict=True)
        ]
    queries = None if passes[2] < 0 else int(passes[2])
    return AttackRun(
        spec, index, eps, adv_pred, fooled, linf, l2, attacked, goal, int(passes[0]), int(passes[1]), seconds,
        queries=queries, stages=stages, broken_by=broken_by, cumulative=bool(parts[0][f"cumulative_{i}"]),
        last_restart_broken=last_restart_broken,
        norms=norms,
    )  # fmt: skip
