"""A worker's context for tests that call the worker's job functions directly: real store, real files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.artifacts import ArtifactStore
from service.settings import Settings
from service.store import JobStore
from workers.jobs import WorkerContext
from workers.model_cache import ModelCache


class Sent(list[tuple[str, str]]):
    """A worker context's task sender that records (task, id) instead of talking to a broker."""

    def __call__(self, task: str, job_id: str) -> None:
        self.append((task, job_id))


@contextmanager
def worker_context(settings: Settings, *, worker: str = "test-worker") -> Iterator[WorkerContext]:
    """A SQLite store and an artifact store in `settings.data_dir`, and a sender that records."""
    store = JobStore(settings.resolved_database_url)
    store.create_schema()
    try:
        yield WorkerContext(
            settings=settings,
            store=store,
            artifacts=ArtifactStore(settings.data_dir),
            models=ModelCache(2),
            worker=worker,
            send=Sent(),
        )
    finally:
        store.dispose()
