"""Fixtures of the unit tests: the API on a temporary data dir (`api`), a worker's context (`ctx`) and
the job store on SQLite and on PostgreSQL (`store`).

TensorFlow is imported only by the tests that take `ctx` (through the worker packages).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from service.settings import Settings
from service.store.jobs import JobStore
from tests.clock import ManualClock
from tests.dbs import PostgresUnavailable, fresh_postgres_url
from tests.unit.api_helpers import Api, make_api

if TYPE_CHECKING:
    from workers.context import WorkerContext


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The app with its lifespan run, a SQLite store in `tmp_path/server` and a recording enqueuer."""
    with make_api(tmp_path / "server") as api:
        yield api


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[WorkerContext]:
    """A worker's context on `tmp_path`: SQLite store, artifact store, a sender that records."""
    from tests.workerkit import worker_context

    settings = Settings(data_dir=tmp_path, redis_url="redis://unused", job_lease_s=30)
    with worker_context(settings) as context:
        yield context


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        with fresh_postgres_url() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def clock() -> ManualClock:
    """The `store` fixture's clock: `clock.advance(seconds)` instead of sleeping until a lease expires."""
    return ManualClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[JobStore]:
    """A JobStore with its schema on `clock`, once on SQLite and once on PostgreSQL (skipped when none
    answers)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'parry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = JobStore(url, clock=clock)
    s.create_schema()
    yield s
    if request.param == "postgresql":
        with s.engine.begin() as conn:  # one database per session: empty it between tests
            conn.execute(
                sa.text(
                    "TRUNCATE models, datasets, jobs, api_keys, evaluation_plans, job_shards, job_changes"
                )
            )
    s.dispose()
