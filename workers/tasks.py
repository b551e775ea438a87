"""Celery tasks: thin wrappers that hand a job id to `workers.jobs`; the message never carries data.

Acknowledged late and rejected on worker loss (see `service.broker.celery_config`), and idempotent:
the job row decides whether a delivery has anything to do.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from service.artifacts import ArtifactStore
from service.broker import DELIVER_CALLBACK, QUEUE, RUN_EVALUATION, RUN_EVALUATION_SHARD, VALIDATE_MODEL
from service.settings import get_settings
from service.store import JobStore
from workers import callbacks, jobs, shards
from workers.celery_app import app
from workers.model_cache import ModelCache


@lru_cache(maxsize=1)
def context() -> jobs.WorkerContext:
    """The worker process's store, artifact store and model cache, built on first use."""
    settings = get_settings()
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


def send_task(name: str, job_id: str) -> None:
    app.send_task(name, args=[job_id], queue=QUEUE)


@app.task(name=VALIDATE_MODEL)  # type: ignore[untyped-decorator]
def validate_model(model_id: str) -> None:
    jobs.validate_model(context(), model_id)


@app.task(name=RUN_EVALUATION)  # type: ignore[untyped-decorator]
def run_evaluation(job_id: str) -> None:
    # Large evaluations are split into shards (workers/shards.py); the rest run whole in `jobs`.
    shards.run_evaluation(context(), job_id)


@app.task(name=RUN_EVALUATION_SHARD)  # type: ignore[untyped-decorator]
def run_evaluation_shard(key: str) -> None:
    shards.run_shard(context(), key)


@app.task(  # type: ignore[untyped-decorator]
    name=DELIVER_CALLBACK,
    autoretry_for=(callbacks.CallbackFailed,),
    max_retries=5,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=False,
)
def deliver_callback(job_id: str) -> None:
    callbacks.deliver(context().store, job_id)
