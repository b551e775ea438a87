"""The job change feed (service/store/changes.py): every change of a job's row adds a feed row in its own
transaction, and a reader's polls return each committed change once, even when changes commit out of
`seq` order (PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

from service.domain.jobs import JobStatus
from service.domain.results import Progress
from service.store import changes
from service.store.changes import ChangeFeed
from service.store.jobs import JobStore
from service.store.schema import job_changes_table


def _feed_rows(store: JobStore) -> list[str]:
    query = sa.select(job_changes_table.c.job_id).order_by(job_changes_table.c.seq)
    with store.engine.connect() as conn:
        return list(conn.scalars(query))


def test_every_change_of_a_job_adds_a_feed_row(store: JobStore) -> None:
    job, _ = store.create_job(owner="o", kind="evaluation", spec={})
    assert _feed_rows(store) == [job.id]
    assert store.claim(job.id, worker="w", lease_seconds=60) is not None
    assert store.report_progress(job.id, worker="w", progress=Progress(fraction=0.5), lease_seconds=60)
    assert store.finish(job.id, worker="w", status=JobStatus.SUCCEEDED, result={})
    assert _feed_rows(store) == [job.id] * 4
    # A change that does not apply (the job has ended) writes nothing.
    assert not store.finish(job.id, worker="w", status=JobStatus.FAILED)
    store.request_cancel(job.id, owner="o")
    assert _feed_rows(store) == [job.id] * 4


def test_a_poll_returns_what_committed_since_the_previous_one(store: JobStore) -> None:
    before, _ = store.create_job(owner="o", kind="evaluation", spec={})
    feed = ChangeFeed(store.engine)
    try:
        assert feed.poll().changed == []  # the first poll takes the position; nothing older
        assert feed.poll().changed == []
        a, _ = store.create_job(owner="o", kind="evaluation", spec={})
        store.request_cancel(before.id, owner="o")
        assert feed.poll().changed == [a.id, before.id]
        assert feed.poll().changed == []
        keys = feed.poll().keys
        key = store.add_api_key(name="k", key_sha256="0" * 64)
        assert feed.poll().keys != keys
        keys = feed.poll().keys
        store.revoke_api_key(key.id)
        assert feed.poll().keys != keys
    finally:
        feed.close()


def test_prune_keeps_the_newest_rows(store: JobStore) -> None:
    ids = [store.create_job(owner="o", kind="evaluation", spec={})[0].id for _ in range(5)]
    feed = ChangeFeed(store.engine)
    try:
        feed.prune(keep=2)
        assert _feed_rows(store) == ids[-2:]
        feed.poll()
        new, _ = store.create_job(owner="o", kind="evaluation", spec={})
        assert feed.poll().changed == [new.id]
    finally:
        feed.close()


def test_this_process_hears_of_its_commits_and_not_of_rollbacks(store: JobStore) -> None:
    heard: list[list[str]] = []
    changes.on_commit(store.engine, heard.append)
    job, _ = store.create_job(owner="o", kind="evaluation", spec={})
    store.request_cancel(job.id, owner="o")
    assert heard == [[job.id], [job.id]]
    try:
        with store.engine.begin() as conn:
            changes.record(conn, job.id, now=store.now())
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with store.engine.begin() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert heard == [[job.id], [job.id]]


def test_a_change_that_commits_out_of_seq_order_is_not_missed(postgres_url: str) -> None:
    """Transaction A takes the lower `seq` but commits after B; a reader that had seen B still gets A."""
    store = JobStore(postgres_url)
    store.create_schema()
    feed = ChangeFeed(store.engine)
    try:
        first, _ = store.create_job(owner="o", kind="evaluation", spec={})
        second, _ = store.create_job(owner="o", kind="evaluation", spec={})
        feed.poll()
        with store.engine.connect() as slow:
            tx = slow.begin()
            changes.record(slow, first.id, now=store.now())  # seq n, not committed yet
            store.request_cancel(second.id, owner="o")  # seq n + 1, committed
            assert feed.poll().changed == [second.id]
            assert feed.poll().changed == []  # read again while A keeps the xmin back, returned once
            tx.commit()
        assert feed.poll().changed == [first.id]
        assert feed.poll().changed == []
    finally:
        feed.close()
        with store.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE jobs, job_changes"))
        store.dispose()
