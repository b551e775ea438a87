"""What the worker does for a hard-set job: the surrogates' predictions, the kept samples, the new dataset.

The surrogates run one after another, each in a child process of its own model (`workers/sandbox/`):
loaded, run over the pool in batches, and released before the next one starts, so a job holds one model
in memory at a time, and a warm child still serves one model only. A child answers only each sample's
class and confidence; the kept samples are taken from the pool as the worker itself loads it, never from
arrays a child wrote, and the new dataset passes the checks an upload gets before it is registered.
Idempotent like every runner: the dataset's bytes depend only on the kept samples, so a redelivery finds
the dataset it registered before (same owner, same sha256) instead of adding another.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from service.domain.datasets import (
    ArrayDataset,
    DatasetError,
    in_input_range,
    is_builtin,
    load_builtin,
    load_npz,
    summarize_npz,
)
from service.domain.hard_sets import HardSetResult, HardSetSpec, SurrogateOutcome
from service.domain.jobs import ErrorType, JobStatus
from service.domain.tasks import RUN_HARD_SET
from service.errors import NotFound
from service.store.records import DatasetRecord, JobRecord
from workers.context import WorkerContext, dataset_arg, model_record, model_ref
from workers.models.errors import ModelLoadError
from workers.runners.base import WholeJobRunner
from workers.runtime.heartbeat import Heartbeat
from workers.sandbox.protocol import HARD_SET_FILE, ChildError

log = logging.getLogger(__name__)

DATASET_ARTIFACT = "hard_set.npz"
# A fixed timestamp for the .npz members, so the same kept samples always make the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# A confidence a hair above 1 is float rounding of a softmax; anything further is not a probability.
_PROBABILITY_TOLERANCE = 1e-4


class HardSetRunner(WholeJobRunner):
    """A hard set: each surrogate on the pool in turn, then the samples all of them got wrong confidently."""

    task = RUN_HARD_SET
    noun = "the hard set"

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any]:
        ctx, job_id = self.ctx, self.key
        started = time.perf_counter()
        spec = HardSetSpec.model_validate(claim.spec)
        pool = _pool(ctx, spec)
        labels = pool.y
        kept = np.ones(labels.shape[0], dtype=bool)
        outcomes: list[SurrogateOutcome] = []
        count = len(spec.surrogate_model_ids)
        for index, model_id in enumerate(spec.surrogate_model_ids):
            record = model_record(ctx.store, model_id)
            if record.owner != claim.owner:  # the API checked it; a model is never lent to another owner
                raise ModelLoadError(f"model {model_id} no longer exists")
            what = f"job {job_id} (surrogate {model_id})"
            with ctx.children.session(model_ref(ctx, record), heartbeat, what=what) as session:
                session.call(
                    "hard_set",
                    {
                        "dataset": dataset_arg(ctx, session, spec.pool_dataset_id),
                        "spec": claim.spec,
                        "part": [index, count],
                    },
                )
                pred, confidence = _checked(session.arrays(HARD_SET_FILE), labels.shape[0], what)
            confident_miss = (pred != labels) & (confidence >= spec.min_confidence)
            kept &= confident_miss
            outcomes.append(
                SurrogateOutcome(
                    model_id=model_id,
                    model_sha256=record.sha256,
                    accuracy=float(np.mean(pred == labels)),
                    misclassified_confident=int(confident_miss.sum()),
                )
            )
        classes = int(labels.max()) + 1
        per_class = np.bincount(labels[kept], minlength=classes)
        result = HardSetResult(
            dataset_id=None,
            kept=int(kept.sum()),
            pool_size=int(labels.shape[0]),
            min_confidence=spec.min_confidence,
            per_surrogate=outcomes,
            per_class_kept={str(c): int(per_class[c]) for c in range(classes)},
            pool_dataset_sha256=pool.sha256,
            input_range=spec.input_range,
        )
        if result.kept == 0:
            result.message = (
                f"no sample of the {result.pool_size:,} was misclassified by every surrogate with confidence "
                f"at least {spec.min_confidence:g}, so no dataset was made; lower min_confidence, use a "
                "larger pool, or fewer or other surrogates"
            )
            result.seconds = time.perf_counter() - started
            return _write_report(ctx, job_id, result)
        dataset, created = _register(ctx, claim, spec, pool, kept)
        try:
            result.dataset_id, result.dataset_sha256 = dataset.id, dataset.sha256
            result.seconds = time.perf_counter() - started
            ctx.artifacts.write_job_artifact(
                job_id, DATASET_ARTIFACT, ctx.artifacts.blob_path(dataset.sha256)
            )
            report = _write_report(ctx, job_id, result)
        except BaseException:
            if created:  # no dataset stands beside a failed job
                ctx.store.delete_dataset(dataset.id, owner=claim.owner)
                log.info("job %s: dataset %s deleted again: the job could not complete", job_id, dataset.id)
            raise
        log.info(
            "job %s: hard set %s %s: %d of %d samples of %s kept at confidence %g by %d surrogates",
            job_id, dataset.id, "registered" if created else "found again", result.kept, result.pool_size,
            spec.pool_dataset_id, spec.min_confidence, count,
        )  # fmt: skip
        return report


def run_hard_set(ctx: WorkerContext, job_id: str) -> JobStatus | None:
    """Claim and run one hard-set job; returns its final status, or None when there was nothing to do."""
    return HardSetRunner(ctx, job_id).run()


def _pool(ctx: WorkerContext, spec: HardSetSpec) -> ArrayDataset:
    """The pool's samples as the surrogates see them: its first `max_samples`, a built-in in input_range
    (the same steps as `workers/evaluation/hard_sets.py` in the child)."""
    if is_builtin(spec.pool_dataset_id):
        data = load_builtin(spec.pool_dataset_id)
    else:
        try:
            record = ctx.store.get_dataset(spec.pool_dataset_id)
        except NotFound as exc:
            raise DatasetError(f"dataset {spec.pool_dataset_id} no longer exists") from exc
        data = load_npz(ctx.artifacts.blob_path(record.sha256))
    return in_input_range(data.take(spec.max_samples), spec.input_range)


def _checked(arrays: dict[str, np.ndarray], n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The child's class and confidence per sample, refused unless they are what was asked for."""
    pred, confidence = arrays.get("pred"), arrays.get("confidence")
    if (
        pred is None
        or confidence is None
        or pred.shape != (n,)
        or confidence.shape != (n,)
        or not np.issubdtype(pred.dtype, np.integer)
        or not np.issubdtype(confidence.dtype, np.floating)
        or not np.isfinite(confidence).all()
        or (confidence < 0).any()
        or (confidence > 1 + _PROBABILITY_TOLERANCE).any()
    ):
        raise ChildError(ErrorType.MODEL_CRASHED, f"{what} answered predictions that do not fit the pool")
    return pred.astype(np.int64), confidence.astype(np.float32)


def _register(
    ctx: WorkerContext, job: JobRecord, spec: HardSetSpec, pool: ArrayDataset, kept: np.ndarray
) -> tuple[DatasetRecord, bool]:
    """The kept samples as the owner's new dataset, checked as an upload is; its record, and if it is new."""
    path = ctx.artifacts.temp_path(suffix=".npz")
    try:
        write_npz(path, x=pool.x[kept], y=pool.y[kept])
        summary = summarize_npz(path)  # what an upload of these bytes would be checked and recorded with
        blob = ctx.artifacts.put_file(path)
    finally:
        path.unlink(missing_ok=True)
    name = spec.name or f"{_pool_name(ctx, spec.pool_dataset_id)}-hard"
    return ctx.store.add_dataset(
        owner=job.owner,
        name=name[:500],
        sha256=blob.sha256,
        size_bytes=blob.size_bytes,
        num_samples=summary.num_samples,
        sample_shape=list(summary.sample_shape),
        num_classes=summary.num_classes,
        min_value=summary.min_value,
        max_value=summary.max_value,
    )


def _pool_name(ctx: WorkerContext, dataset_id: str) -> str:
    if is_builtin(dataset_id):
        return dataset_id
    try:
        return ctx.store.get_dataset(dataset_id).name
    except NotFound:
        return dataset_id


def write_npz(path: Path, *, x: np.ndarray, y: np.ndarray) -> None:
    """`x` (float32) and `y` (int64) as an `.npz` numpy.load reads, its bytes fixed by the arrays alone."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, array in (("x", x.astype(np.float32)), ("y", y.astype(np.int64))):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _write_report(ctx: WorkerContext, job_id: str, result: HardSetResult) -> dict[str, Any]:
    report = result.model_dump(mode="json")
    ctx.artifacts.write_job_artifact(job_id, "report.json", json.dumps(report, indent=2).encode())
    return report
