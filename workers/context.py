"""What a worker process shares between its jobs, and the steps every job runner takes the same way.

The runners (`workers/runners/`) claim a job, hand its model and dataset to a child process through these
helpers (`workers/sandbox/`), and end it through `runners/base.py`; `build_context` makes the one context
of a worker process.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from celery import current_app

from service.domain.datasets import DatasetError, is_builtin
from service.domain.results import Progress
from service.domain.specs import EvaluationSpec
from service.domain.tasks import QUEUE
from service.errors import NotFound
from service.settings import Settings, get_settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from service.store.records import ModelRecord
from workers.models.errors import ModelLoadError
from workers.runtime.heartbeat import Heartbeat, lease_heartbeat
from workers.sandbox.pool import ChildPool, ModelRef, Session

log = logging.getLogger(__name__)

INTERNAL_ERROR = (
    "the worker hit an internal error while running this job; the operator's worker log has details"
)


@dataclass
class WorkerContext:
    """What a worker process shares between its jobs."""

    settings: Settings
    store: JobStore
    artifacts: ArtifactStore
    children: ChildPool  # the model processes (workers/sandbox/); the worker itself never loads a model
    worker: str
    # Sends a follow-up task by name (job id as its one argument); Celery's send_task in a worker.
    send: Callable[[str, str], None]


def job_heartbeat(ctx: WorkerContext, job_id: str) -> Heartbeat:
    """The heartbeat of a job this worker has claimed: writes its progress and renews the lease."""

    def report(progress: Progress) -> bool:
        return bool(
            ctx.store.report_progress(
                job_id, worker=ctx.worker, progress=progress, lease_seconds=ctx.settings.job_lease_s
            )
        )

    return lease_heartbeat(report, ctx.settings, poll=lambda: ctx.store.stop_wanted(job_id))


def model_record(store: JobStore, model_id: str) -> ModelRecord:
    try:
        record = store.get_model(model_id)
    except NotFound as exc:
        raise ModelLoadError(f"model {model_id} no longer exists") from exc
    if record.status == "rejected":
        raise ModelLoadError(f"model {model_id} was rejected: {record.rejection}")
    return record


def model_ref(ctx: WorkerContext, record: ModelRecord) -> ModelRef:
    """The model a job's child loads: its owner (a warm child serves one), stored file and output kind."""
    # Before validation the output is what the uploader asked for (maybe "auto"); after, what was found.
    return ModelRef(
        record.owner, record.sha256, ctx.artifacts.blob_path(record.sha256), requested_output(record.output)
    )


def requested_output(value: str) -> Literal["auto", "logits", "probabilities"]:
    if value == "logits":
        return "logits"
    return "probabilities" if value == "probabilities" else "auto"


def dataset_arg(ctx: WorkerContext, session: Session, dataset_id: str) -> dict[str, str]:
    """How the child finds a dataset: a built-in by name, an upload copied into the session's inbox."""
    if is_builtin(dataset_id):
        return {"builtin": dataset_id}
    try:
        record = ctx.store.get_dataset(dataset_id)
    except NotFound as exc:
        raise DatasetError(f"dataset {dataset_id} no longer exists") from exc
    return {"path": session.stage(ctx.artifacts.blob_path(record.sha256))}


def ood_dataset_arg(ctx: WorkerContext, session: Session, spec: EvaluationSpec) -> dict[str, Any]:
    """`{"ood_dataset": ...}` for a call of an evaluation with `ood`, else nothing."""
    if spec.ood is None:
        return {}
    return {"ood_dataset": dataset_arg(ctx, session, spec.ood.dataset_id)}


def send_task(name: str, job_id: str) -> None:
    """Send a follow-up task by name through the worker's Celery app (the current one in a worker)."""
    current_app.send_task(name, args=[job_id], queue=QUEUE)


@lru_cache(maxsize=1)
def build_context() -> WorkerContext:
    """The worker process's store, artifact store and model processes, built on first use."""
    settings = get_settings()
    # Absolute, because each job runs with its cwd in its own directory (workers/runtime/sandbox.py).
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    store = JobStore(settings.resolved_database_url)
    store.create_schema()
    return WorkerContext(
        settings=settings,
        store=store,
        artifacts=ArtifactStore(settings.data_dir),
        children=ChildPool(settings),
        # Unique per process: two workers on one host must not share leases.
        worker=f"{socket.gethostname()}:{os.getpid()}",
        send=send_task,
    )
