"""Celery tasks: thin wrappers that hand a job id to `workers/runners/`; the message never carries data.

Acknowledged late and rejected on worker loss (see `service.domain.tasks.celery_config`), and idempotent:
the job row decides whether a delivery has anything to do.
"""

from __future__ import annotations

from service.domain.tasks import (
    DELIVER_CALLBACK,
    RUN_EVALUATION,
    RUN_EVALUATION_SHARD,
    RUN_HARD_SET,
    RUN_TRAINING,
    VALIDATE_MODEL,
)
from workers.celery_app import app
from workers.context import build_context
from workers.runners import hard_set as hard_sets
from workers.runners import sharded as shards
from workers.runners import training as training_jobs
from workers.runners import validation
from workers.runtime import callbacks


@app.task(name=VALIDATE_MODEL)  # type: ignore[untyped-decorator]
def validate_model(model_id: str) -> None:
    validation.validate_model(build_context(), model_id)


@app.task(name=RUN_EVALUATION)  # type: ignore[untyped-decorator]
def run_evaluation(job_id: str) -> None:
    # Large evaluations are split into shards (workers/runners/sharded.py); the rest run whole.
    shards.run_evaluation(build_context(), job_id)


@app.task(name=RUN_EVALUATION_SHARD)  # type: ignore[untyped-decorator]
def run_evaluation_shard(key: str) -> None:
    shards.run_shard(build_context(), key)


@app.task(name=RUN_TRAINING)  # type: ignore[untyped-decorator]
def run_training(job_id: str) -> None:
    training_jobs.run_training(build_context(), job_id)


@app.task(name=RUN_HARD_SET)  # type: ignore[untyped-decorator]
def run_hard_set(job_id: str) -> None:
    hard_sets.run_hard_set(build_context(), job_id)


@app.task(  # type: ignore[untyped-decorator]
    name=DELIVER_CALLBACK,
    autoretry_for=(callbacks.CallbackFailed,),
    max_retries=5,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=False,
)
def deliver_callback(job_id: str) -> None:
    ctx = build_context()
    callbacks.deliver(ctx.store, job_id, allow_private=ctx.settings.callback_allow_private)
