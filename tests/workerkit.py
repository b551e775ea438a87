"""A worker's context for tests that call the worker's job functions directly: real store, real files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.settings import Settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from workers.context import WorkerContext
from workers.runners import validation
from workers.sandbox.pool import ChildPool

DIGITS_FGSM = {"dataset_id": "builtin:digits:test", "attacks": [{"name": "fgsm", "eps": [0.1, 0.2]}]}


class Sent(list[tuple[str, str]]):
    """A worker context's task sender that records (task, id) instead of talking to a broker."""

    def __call__(self, task: str, job_id: str) -> None:
        self.append((task, job_id))


@contextmanager
def worker_context(settings: Settings, *, worker: str = "test-worker") -> Iterator[WorkerContext]:
    """A SQLite store and an artifact store in `settings.data_dir`, and a sender that records."""
    store = JobStore(settings.resolved_database_url)
    store.create_schema()
    children = ChildPool(settings)
    try:
        yield WorkerContext(
            settings=settings,
            store=store,
            artifacts=ArtifactStore(settings.data_dir),
            children=children,
            worker=worker,
            send=Sent(),
        )
    finally:
        children.close()
        store.dispose()


def upload_model(ctx: WorkerContext, path: Path, fmt: str = "keras") -> str:
    """Store a model file as an upload of owner "o" (status validating); returns its id."""
    blob = ctx.artifacts.put_file(path)
    record, _ = ctx.store.add_model(
        owner="o", name=path.name, sha256=blob.sha256, format=fmt, size_bytes=blob.size_bytes, output="auto"
    )
    return record.id


def ready_model(ctx: WorkerContext, path: Path) -> str:
    """An uploaded model that the worker's own validation marked ready; returns its id."""
    model_id = upload_model(ctx, path)
    assert validation.validate_model(ctx, model_id) == "ready"
    return model_id


def evaluation_job(ctx: WorkerContext, model_id: str, spec: dict[str, Any]) -> str:
    """A queued evaluation of owner "o" on `model_id`; returns its id."""
    job, _ = ctx.store.create_job(owner="o", kind="evaluation", spec={"model_id": model_id, **spec})
    return job.id
