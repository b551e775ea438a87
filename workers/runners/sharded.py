"""Sharded evaluation: one large evaluation split into shards that several workers run at once.

Why this shape: no task waits on another (no Celery chord, no result backend). The worker that claims the
job runs the clean pass, writes it to the shared data directory, records the shards in the store
(service/store/shards.py) and sends one task per shard. Each shard attacks a range of the GLOBAL batch indices
of every (attack, eps) run, so its seeds are the ones a single worker would use, and writes its arrays to
the data directory. The worker whose shard is the last to succeed merges the arrays and reduces them with
the same code as `evaluate`, so the report equals the single-worker report except for timing. Corruptions
(workers/natural/runs.py) split the same batch indices over every sample, the last shard taking the rest.

Progress is the parent job's (clean pass plus every shard's share); a cancel of the parent stops every
shard at its next heartbeat; a shard whose worker dies is sent again by the reconciler when its lease
expires, like a job.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from service.domain.builtins import BUILTIN_INFO, is_builtin
from service.domain.jobs import JobStatus
from service.domain.results import Progress
from service.domain.specs import EvaluationOptions, EvaluationSpec
from service.domain.tasks import RUN_EVALUATION, RUN_EVALUATION_SHARD
from service.errors import NotFound
from service.settings import Settings
from service.store.records import JobRecord
from service.store.shards import ShardRecord, ShardSpan, ShardStore, parse_shard_key, shard_key
from workers.context import WorkerContext, dataset_arg, model_record, model_ref, ood_dataset_arg
from workers.evaluation import engine as evaluation
from workers.evaluation.robustness import AttackRun
from workers.evaluation.run_arrays import merged_run
from workers.natural.runs import corruption_units, shard_span
from workers.natural.runs import merged_runs as merged_corruptions
from workers.runners.base import HandedOn, JobRunner, WholeJobRunner
from workers.runners.evaluation import run_evaluation as run_unsharded
from workers.runners.evaluation import write_evaluation_artifacts
from workers.runtime.heartbeat import Heartbeat, lease_heartbeat
from workers.sandbox.protocol import CLEAN_FILE, SHARD_FILE, ChildStopped

log = logging.getLogger(__name__)


def shard_dir(settings: Settings, job_id: str) -> Path:
    """Where a sharded job's intermediate arrays live; every worker of the job must see the same directory."""
    return settings.data_dir / "shards" / job_id


def plan_spans(correct: int, batch_size: int, shard_size: int, units_per_sample: float) -> list[ShardSpan]:
    """Whole batches of the clean-correct samples per shard, about `shard_size` samples each, one at least."""
    num_batches = math.ceil(correct / batch_size)
    per_shard = max(1, round(shard_size / batch_size))
    spans = []
    for start in range(0, max(num_batches, 1), per_shard):
        stop = min(start + per_shard, num_batches)
        samples = max(0, min(stop * batch_size, correct) - start * batch_size)
        spans.append(ShardSpan(start, stop, samples * units_per_sample))
    return spans


def run_evaluation(ctx: WorkerContext, job_id: str) -> JobStatus | None:
    """The RUN_EVALUATION task: resume a sharded job, split a large one, or run it whole."""
    shards = ShardStore(ctx.store)
    if shards.get_plan(job_id) is not None:
        # Sent again: its merging worker died (lease expired), so merge here or hand it back to its shards.
        return _Merger(ctx, job_id, shards, held=False).run()
    if _wants_shards(ctx, job_id):
        return _Coordinator(ctx, job_id, shards).run()
    return run_unsharded(ctx, job_id)


def _wants_shards(ctx: WorkerContext, job_id: str) -> bool:
    try:
        job = ctx.store.get_job(job_id)
        spec = EvaluationSpec.model_validate(job.spec)
        if is_builtin(spec.dataset_id):
            available = BUILTIN_INFO[spec.dataset_id].num_samples
        else:
            available = ctx.store.get_dataset(spec.dataset_id).num_samples
    except Exception:  # whatever is wrong, the whole-job path reports it with a sentence
        return False
    samples = min(available, spec.max_samples) if spec.max_samples else available
    # Shards split attack work; without attacks, the forward passes are one worker's job.
    return bool(spec.attacks) and samples >= ctx.settings.shard_min_samples


def _units_per_sample(options: EvaluationOptions) -> float:
    return float(sum(spec.planned_steps() for spec in options.attacks))


def _corruption_units(options: EvaluationOptions, span: ShardSpan, correct: int, samples: int) -> float:
    """A shard's corruption work: its range of samples under every item (workers/natural/runs.py)."""
    if options.corruptions is None:
        return 0.0
    mine = shard_span(span.batch_start, span.batch_stop, correct=correct, batch_size=options.batch_size,
                      samples=samples)  # fmt: skip
    return corruption_units(options.corruptions, len(mine))


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    # Written whole then renamed: a reader never sees half a file, a rerun overwrites.
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})  # type: ignore[arg-type]
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_bytes(buffer.getvalue())
    os.replace(staged, path)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


# ---- the coordinator: clean pass, plan, one task per shard -------------------------------------------


class _Coordinator(WholeJobRunner):
    """The clean pass of a large evaluation, then the plan: one task per shard, the job handed to them."""

    task = RUN_EVALUATION

    def __init__(self, ctx: WorkerContext, job_id: str, shards: ShardStore) -> None:
        super().__init__(ctx, job_id)
        self.shards = shards

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any] | None:
        ctx, settings, job_id = self.ctx, self.ctx.settings, self.key
        spec = EvaluationSpec.model_validate(claim.spec)
        options = spec.options()
        units = _units_per_sample(options)
        record = model_record(ctx.store, spec.model_id)
        with ctx.children.session(model_ref(ctx, record), heartbeat, what=f"job {job_id}") as session:
            meta = session.call(
                "clean",
                {
                    "dataset": dataset_arg(ctx, session, spec.dataset_id),
                    "spec": claim.spec,
                    "units_per_sample": units,
                    **ood_dataset_arg(ctx, session, spec),
                },
            )
            clean = session.arrays(CLEAN_FILE)
        y, clean_pred = clean["labels"], clean["clean_pred"]
        directory = shard_dir(settings, job_id)
        _save_npz(directory / "clean.npz", clean)
        keys = ("num_classes", "model_sha256", "dataset_sha256", "ood_dataset_sha256", "warnings")
        facts = {key: meta.get(key) for key in keys}
        (directory / "clean.json").write_text(json.dumps(facts))
        correct = int((clean_pred == y).sum())
        spans = [
            ShardSpan(
                s.batch_start, s.batch_stop, s.units + _corruption_units(options, s, correct, y.shape[0])
            )
            for s in plan_spans(correct, options.batch_size, settings.shard_size, units)
        ]
        clean_units = float(y.shape[0])
        total_units = clean_units + sum(span.units for span in spans)
        if self.shards.create_plan(
            job_id, coordinator=ctx.worker, spans=spans, clean_units=clean_units, total_units=total_units
        ):
            for index in range(len(spans)):
                ctx.send(RUN_EVALUATION_SHARD, shard_key(job_id, index))
            log.info("job %s: %d samples in %d shards sent", job_id, y.shape[0], len(spans))
            raise HandedOn(JobStatus.RUNNING)
        if ctx.store.get_job(job_id).cancel_requested:
            raise ChildStopped(job_id)  # the heartbeat did not ask to stop, so this ends it cancelled
        log.warning("job %s: lease lost before the shards were planned", job_id)
        raise HandedOn(None)

    def ended(self, claim: JobRecord, status: JobStatus) -> JobStatus | None:
        shutil.rmtree(shard_dir(self.ctx.settings, self.key), ignore_errors=True)
        return super().ended(claim, status)


class _Merger(_Coordinator):
    """Put every shard's batches together and reduce them to the report, as `evaluate` does.

    Run by the worker whose shard was the last to succeed (it took the job with a lease when it
    finished that shard), or by a worker that claimed the job again after that merge was lost; one
    whose shards are not all done yet is handed back to them.
    """

    def __init__(self, ctx: WorkerContext, job_id: str, shards: ShardStore, *, held: bool) -> None:
        super().__init__(ctx, job_id, shards)
        self.held = held

    def claim(self) -> JobRecord | None:
        return self.ctx.store.get_job(self.key) if self.held else super().claim()

    def work(self, claim: JobRecord, heartbeat: Heartbeat) -> dict[str, Any] | None:
        ctx, job_id, shards = self.ctx, self.key, self.shards
        plan = shards.get_plan(job_id)
        if plan is None or plan.shards_done < plan.num_shards:
            if shards.hand_to_shards(job_id, worker=ctx.worker):
                for shard in shards.shards(job_id):
                    if shard.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                        ctx.send(RUN_EVALUATION_SHARD, shard.key)
            raise HandedOn(JobStatus.RUNNING)
        options = EvaluationSpec.model_validate(claim.spec).options()
        directory = shard_dir(ctx.settings, job_id)
        meta = json.loads((directory / "clean.json").read_text())
        clean = _load_npz(directory / "clean.npz")
        records = shards.shards(job_id)
        parts = [_load_npz(directory / f"shard-{record.shard_index}.npz") for record in records]
        batches = [range(record.batch_start, record.batch_stop) for record in records]
        runs = merge_runs(options, clean["clean_pred"], batches, parts)
        corrupted = merged_corruptions(parts) if options.corruptions is not None else None
        started = claim.started_at or claim.created_at
        outcome = evaluation.summarize(
            runs, clean["labels"], clean["clean_pred"], clean["zero_grad"], clean["bad_grad"], options,
            warnings=list(meta["warnings"]), num_classes=int(meta["num_classes"]),
            model_sha256=meta["model_sha256"], dataset_sha256=meta["dataset_sha256"],
            seconds=(ctx.store.now() - started).total_seconds(), clean_scores=clean.get("clean_scores"),
            ood_scores=clean.get("ood_scores"), ood_dataset_sha256=meta.get("ood_dataset_sha256"),
            corruptions=corrupted,
        )  # fmt: skip
        result = outcome.result.model_dump(mode="json")
        write_evaluation_artifacts(ctx, job_id, result, outcome.per_sample)
        log.info("job %s: %d shards merged on %s", job_id, len(records), ctx.worker)
        return result


# ---- a shard ------------------------------------------------------------------------------------------


class _Shard(JobRunner[ShardRecord]):
    """One shard: attack its batches and save its arrays; the last shard to succeed merges."""

    task = RUN_EVALUATION_SHARD
    noun = "a shard"

    def __init__(self, ctx: WorkerContext, key: str) -> None:
        super().__init__(ctx, key)
        self.shards = ShardStore(ctx.store)
        self.job_id, self.index = parse_shard_key(key)
        self.merge = False
        self.error: dict[str, Any] | None = None

    def claim(self) -> ShardRecord | None:
        lease = self.ctx.settings.job_lease_s
        return self.shards.claim_shard(self.job_id, self.index, worker=self.ctx.worker, lease_seconds=lease)

    def unclaimed(self) -> None:
        self.shards.settle_shard(self.job_id, self.index)
        log.info(
            "job %s shard %d: not claimed (done, cancelled, or running elsewhere)", self.job_id, self.index
        )

    def heartbeat(self) -> Heartbeat:
        settings = self.ctx.settings

        def report(progress: Progress) -> bool:
            return self.shards.report_shard_progress(
                self.job_id,
                self.index,
                worker=self.ctx.worker,
                fraction=progress.fraction,
                lease_seconds=settings.job_lease_s,
                stage=progress.stage,
            )

        return lease_heartbeat(report, settings, poll=lambda: self.ctx.store.stop_wanted(self.job_id))

    def work(self, claim: ShardRecord, heartbeat: Heartbeat) -> dict[str, Any] | None:
        ctx, settings, job_id = self.ctx, self.ctx.settings, self.job_id
        job = ctx.store.get_job(job_id)
        spec = EvaluationSpec.model_validate(job.spec)
        record = model_record(ctx.store, spec.model_id)
        what = f"job {job_id} shard {self.index}"
        with ctx.children.session(model_ref(ctx, record), heartbeat, what=what) as session:
            session.call(
                "shard",
                {
                    "dataset": dataset_arg(ctx, session, spec.dataset_id),
                    "spec": job.spec,
                    "clean": session.stage(shard_dir(settings, job_id) / "clean.npz"),
                    "batch_start": claim.batch_start,
                    "batch_stop": claim.batch_stop,
                    "units": claim.units,
                },
            )
            arrays = session.arrays(SHARD_FILE)
        _save_npz(shard_dir(settings, job_id) / f"shard-{self.index}.npz", arrays)
        return None

    def settle(self, exc: Exception) -> tuple[JobStatus, dict[str, Any] | None] | None:
        if isinstance(exc, NotFound | FileNotFoundError):
            log.warning(
                "job %s shard %d: its job or clean pass is gone", self.job_id, self.index, exc_info=True
            )
            return JobStatus.CANCELLED, None
        return None

    def release(self) -> None:
        self.shards.release_shard(self.job_id, self.index, worker=self.ctx.worker)

    def finish(
        self,
        claim: ShardRecord,
        status: JobStatus,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> bool:
        applied, self.merge = self.shards.finish_shard(
            self.job_id,
            self.index,
            worker=self.ctx.worker,
            status=status,
            lease_seconds=self.ctx.settings.job_lease_s,
            error=error,
        )
        self.error = error
        return applied

    def ended(self, claim: ShardRecord, status: JobStatus) -> JobStatus | None:
        if status != JobStatus.SUCCEEDED:
            # One failed shard fails the job; a cancelled one means the job was cancelled.
            outcome = JobStatus.FAILED if status == JobStatus.FAILED else JobStatus.CANCELLED
            if self.shards.end_parent(self.job_id, status=outcome, error=self.error):
                shutil.rmtree(shard_dir(self.ctx.settings, self.job_id), ignore_errors=True)
            return status
        if self.merge:
            return _Merger(self.ctx, self.job_id, self.shards, held=True).run()
        return status

    def describe(self, claim: ShardRecord) -> str:
        return f"job {self.job_id} shard {self.index}"


def run_shard(ctx: WorkerContext, key: str) -> JobStatus | None:
    """The RUN_EVALUATION_SHARD task: attack one shard's batches; the last shard to succeed merges."""
    return _Shard(ctx, key).run()


# ---- the merge ----------------------------------------------------------------------------------------


def merge_runs(
    options: EvaluationOptions,
    clean_pred: np.ndarray,
    batches: list[range],
    parts: list[dict[str, np.ndarray]],
) -> list[AttackRun]:
    """The whole evaluation's attack runs from the shards' arrays (shard i computed global `batches[i]`)."""
    runs: list[AttackRun] = []
    for index, spec in enumerate(options.attacks):
        # A minimum-norm attack made one run, whatever its eps (engine.attack_runs).
        for eps in [math.inf] if spec.minimum_norm else spec.eps_values():
            runs.append(
                merged_run(spec, index, eps, len(runs), clean_pred, batches, parts, options.batch_size)
            )
    return runs


__all__ = ["merge_runs", "plan_spans", "run_evaluation", "run_shard", "shard_dir"]
