"""Schema migrations (service/store/migrations) on SQLite and PostgreSQL: databases made by older releases
are upgraded with every row kept, a new one goes straight to head, `create_schema` is idempotent and safe
to run from two processes at once, and the migrations agree with service/store/schema.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.store import migrations
from service.store.jobs import JobStore
from service.store.schema import metadata
from service.store.shards import ShardStore
from tests.dbs import PostgresUnavailable, fresh_postgres_url
from tests.old_schemas import RELEASES, create_old_database, old_metadata

HEAD = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own for each test (an old schema cannot share the session's database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parry.db'}"
        return
    try:
        with fresh_postgres_url() as fresh:
            yield fresh
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def store(url: str) -> Iterator[JobStore]:
    """A JobStore on `url` whose schema the test creates (or not)."""
    s = JobStore(url)
    yield s
    s.dispose()


def _revision(store: JobStore) -> str | None:
    with store.engine.connect() as conn:
        return migrations.current_revision(conn)


def _columns(store: JobStore) -> dict[str, list[str]]:
    with store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {t: [c["name"] for c in inspector.get_columns(t)] for t in sorted(inspector.get_table_names())}


def _differences(store: JobStore) -> list[Any]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_the_migrations_form_one_line_from_the_baseline() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert [r.revision for r in script.walk_revisions("base", "heads")][-1] == migrations.BASELINE
    assert HEAD == "0004_value_ranges"


def test_a_new_database_goes_straight_to_head(store: JobStore) -> None:
    assert _revision(store) is None
    store.create_schema()
    assert _revision(store) == HEAD
    assert set(_columns(store)) == {*metadata.tables, "alembic_version"}
    job, _ = store.create_job(owner="local", kind="evaluation", spec={})
    assert store.get_job(job.id).status == "queued"


def test_create_schema_twice_changes_nothing(store: JobStore) -> None:
    store.create_schema()
    job, _ = store.create_job(owner="local", kind="evaluation", spec={"model_id": "mdl_x"})
    columns = _columns(store)
    store.create_schema()
    assert _revision(store) == HEAD
    assert _columns(store) == columns
    assert store.get_job(job.id).spec == {"model_id": "mdl_x"}


def _migrated(table: str, row: dict[str, object]) -> dict[str, object]:
    """An old row as the migrations leave it: a sharded job's sentinel worker becomes its phase."""
    if table == "jobs" and row.get("worker") == "(shards)":
        return {**row, "worker": None}
    return row


@pytest.mark.parametrize("release", RELEASES)
def test_a_database_made_by_an_older_release_keeps_every_row(store: JobStore, release: str) -> None:
    rows = create_old_database(store.engine, release)
    assert _revision(store) is None

    store.create_schema()

    assert _revision(store) == HEAD
    with store.engine.connect() as conn:
        for table in old_metadata(release).sorted_tables:
            kept = [dict(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key)).mappings()]
            keys = sorted(table.c.keys())
            expected = [_migrated(table.name, row) for row in rows[table.name]]
            assert [{k: r[k] for k in keys if k in rows[table.name][0]} for r in kept] == expected
        models = sa.table("models", sa.column("trainable"), sa.column("validation_attempts"))
        model = conn.execute(sa.select(models)).one()
        jobs = sa.table("jobs", sa.column("id"), sa.column("phase"))
        phases = {r.id: r.phase for r in conn.execute(sa.select(jobs))}
    if release == "fbde16a":  # the columns it lacked, with their defaults
        assert (model.trainable, model.validation_attempts) == (None, 0)
    else:
        assert (model.trainable, model.validation_attempts) == (True, 1)
    assert phases.pop("job_sharded") == "sharded"
    assert set(phases.values()) == {None}
    # The store reads the upgraded rows (aware UTC datetimes, JSON, the phase instead of the sentinel).
    sharded = store.get_job("job_sharded")
    assert sharded.worker is None and sharded.phase == "sharded"
    assert sharded.started_at is not None and sharded.started_at.tzinfo
    assert store.get_model("mdl_old").num_classes == 10
    assert {k.name for k in store.list_api_keys()} == {"ci", "old laptop"}
    assert [s.status for s in ShardStore(store).shards("job_sharded")] == ["succeeded", "running"]


@pytest.mark.parametrize("release", RELEASES)
def test_an_upgraded_database_upgrades_no_further(store: JobStore, release: str) -> None:
    create_old_database(store.engine, release)
    store.create_schema()
    columns = _columns(store)
    store.create_schema()
    assert _revision(store) == HEAD and _columns(store) == columns


@pytest.mark.parametrize("release", [None, *RELEASES])
def test_the_migrated_schema_is_the_schema_the_code_declares(store: JobStore, release: str | None) -> None:
    """A column added to schema.py without a migration (or the other way round) fails here."""
    if release is not None:
        create_old_database(store.engine, release)
    store.create_schema()
    assert _differences(store) == []


def test_a_column_declared_without_a_migration_is_found(store: JobStore) -> None:
    store.create_schema()
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs DROP COLUMN phase"))
    differences = _differences(store)
    assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "jobs", "phase")]


@pytest.mark.parametrize("release", [None, "fbde16a"])
def test_two_processes_starting_at_once_both_migrate_once(url: str, release: str | None) -> None:
    """An API and a worker starting together: each has its own engine, one waits for the other's lock."""
    stores = [JobStore(url), JobStore(url)]
    try:
        if release is not None:
            create_old_database(stores[0].engine, release)
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def start(store: JobStore) -> None:
            barrier.wait()
            try:
                store.create_schema()
            except BaseException as exc:  # reported by the assertion below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert _revision(stores[1]) == HEAD and _differences(stores[1]) == []
        if release is not None:
            assert stores[1].get_job("job_sharded").phase == "sharded"
    finally:
        for s in stores:
            s.dispose()


def test_the_phase_migration_downgrades_and_upgrades_again(store: JobStore) -> None:
    create_old_database(store.engine, "816b7be")
    store.create_schema()
    with store.engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), migrations.BASELINE)
    assert _revision(store) == migrations.BASELINE and "phase" not in _columns(store)["jobs"]
    with store.engine.connect() as conn:  # the downgrade put the old sentinel back
        workers = dict(conn.execute(sa.text("SELECT id, worker FROM jobs")).all())
    assert workers["job_sharded"] == "(shards)"
    store.create_schema()
    # SQLite rebuilt the jobs table to drop the column: its rows, indexes and constraints are back.
    assert _revision(store) == HEAD and _differences(store) == []
    assert store.get_job("job_sharded").phase == "sharded"
    assert len(store.list_jobs("local", limit=50)[0]) == 7


def test_a_process_of_an_older_release_starts_on_a_database_a_newer_one_migrated(store: JobStore) -> None:
    store.create_schema()
    with store.engine.begin() as conn:  # as if the next release had added a revision and run it
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    store.create_schema()
    assert _revision(store) == "9999_from_the_future"
    job, _ = store.create_job(owner="local", kind="evaluation", spec={})
    assert store.get_job(job.id).status == "queued"


def test_the_value_range_migration_keeps_rows_and_downgrades(store: JobStore) -> None:
    """0004: older datasets get no range (unknown, so the submission check skips them), models no warning;
    new ones keep theirs; the downgrade drops the columns and keeps the rows."""
    create_old_database(store.engine, "816b7be")
    store.create_schema()
    with store.engine.connect() as conn:
        old = conn.execute(sa.text("SELECT min_value, max_value FROM datasets")).all()
    assert old and all(row == (None, None) for row in old)
    assert store.get_model("mdl_old").warnings is None
    new, _ = store.add_dataset(
        owner="local", name="d", sha256="d" * 64, size_bytes=1, num_samples=1, sample_shape=[1],
        num_classes=2, min_value=-1.5, max_value=2.0,
    )  # fmt: skip
    warned, _ = store.add_model(
        owner="local", name="m", sha256="e" * 64, format="keras", size_bytes=1, output="logits",
        warnings=["worse than its upload"],
    )  # fmt: skip
    assert (store.get_dataset(new.id).min_value, store.get_dataset(new.id).max_value) == (-1.5, 2.0)
    assert store.get_model(warned.id).warnings == ["worse than its upload"]
    with store.engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "0003_job_changes")
    columns = _columns(store)
    assert "min_value" not in columns["datasets"] and "warnings" not in columns["models"]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM datasets")).scalar_one() == len(old) + 1
    store.create_schema()
    assert _revision(store) == HEAD and _differences(store) == []
    assert store.get_dataset(new.id).min_value is None  # dropped by the downgrade, unknown again
