"""Celery tasks: thin wrappers that hand a job id to `workers.jobs`; the message never carries data.

Acknowledged late and rejected on worker loss (see `service.broker.celery_config`), and idempotent:
the job row decides whether a delivery has anything to do.
"""

from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path

from service.artifacts import ArtifactStore
from service.broker import (
    DELIVER_CALLBACK,
    QUEUE,
    RUN_EVALUATION,
    RUN_EVALUATION_SHARD,
    RUN_TRAINING,
    VALIDATE_MODEL,
)
from service.settings import get_settings
from service.store import JobStore
from workers import callbacks, jobs, sandbox, shards, training_jobs
from workers.celery_app import app
from workers.model_cache import ModelCache


@lru_cache(maxsize=1)
def context() -> jobs.WorkerContext:
    """The worker process's store, artifact store and model cache, built on first use."""
    settings = get_settings()
    # Absolute, because each job runs with its cwd in its own directory (workers/sandbox.py).
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    store = JobStore(settings.resolved_database_url)
    store.create_schema()
    return jobs.WorkerContext(
        settings=settings,
        store=store,
        artifacts=ArtifactStore(settings.data_dir),
        models=ModelCache(settings.worker_model_cache_size),
        # Unique per process: two workers on one host must not share leases.
        worker=f"{socket.gethostname()}:{os.getpid()}",
        send=send_task,
    )


def _job_directory(job_id: str) -> AbstractContextManager[Path]:
    return sandbox.job_directory(context().settings.data_dir, job_id)


def send_task(name: str, job_id: str) -> None:
    app.send_task(name, args=[job_id], queue=QUEUE)


@app.task(name=VALIDATE_MODEL)  # type: ignore[untyped-decorator]
def validate_model(model_id: str) -> None:
    with _job_directory(model_id):
        jobs.validate_model(context(), model_id)


@app.task(name=RUN_EVALUATION)  # type: ignore[untyped-decorator]
def run_evaluation(job_id: str) -> None:
    # Large evaluations are split into shards (workers/shards.py); the rest run whole in `jobs`.
    with _job_directory(job_id):
        shards.run_evaluation(context(), job_id)


@app.task(name=RUN_EVALUATION_SHARD)  # type: ignore[untyped-decorator]
def run_evaluation_shard(key: str) -> None:
    with _job_directory(key):
        shards.run_shard(context(), key)


@app.task(name=RUN_TRAINING)  # type: ignore[untyped-decorator]
def run_training(job_id: str) -> None:
    with _job_directory(job_id):
        training_jobs.run_training(context(), job_id)


@app.task(  # type: ignore[untyped-decorator]
    name=DELIVER_CALLBACK,
    autoretry_for=(callbacks.CallbackFailed,),
    max_retries=5,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=False,
)
def deliver_callback(job_id: str) -> None:
    ctx = context()
    callbacks.deliver(ctx.store, job_id, allow_private=ctx.settings.callback_allow_private)
