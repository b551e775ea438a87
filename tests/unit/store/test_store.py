"""JobStore on SQLite and PostgreSQL: records, ownership, idempotency, leases, cancellation, races."""

from __future__ import annotations

import threading

import pytest

from service.domain.results import Progress
from service.errors import InvalidCursor, NotFound
from service.store.jobs import JobStore
from tests.clock import ManualClock


def _job(store: JobStore, owner: str = "local", **kw: object) -> str:
    job, created = store.create_job(owner=owner, kind="evaluation", spec={"model_id": "mdl_x"}, **kw)  # type: ignore[arg-type]
    assert created
    return job.id


def test_create_schema_is_idempotent(store: JobStore) -> None:
    store.create_schema()
    store.create_schema()
    store.ping()


def test_model_lifecycle_and_dedup(store: JobStore) -> None:
    m, created = store.add_model(
        owner="local", name="cnn", sha256="a" * 64, format="keras", size_bytes=10, output="auto"
    )
    assert created and m.id.startswith("mdl_") and m.status == "validating"
    assert m.created_at.tzinfo is not None
    again, created = store.add_model(
        owner="local", name="other", sha256="a" * 64, format="keras", size_bytes=10, output="auto"
    )
    assert not created and again.id == m.id
    theirs, created = store.add_model(
        owner="bob", name="cnn", sha256="a" * 64, format="keras", size_bytes=10, output="auto"
    )
    assert created and theirs.id != m.id
    with pytest.raises(NotFound):
        store.get_model(m.id, owner="bob")
    store.set_model_ready(m.id, input_shape=[28, 28, 1], num_classes=10, output="logits")
    ready = store.get_model(m.id)
    assert (ready.status, ready.input_shape, ready.num_classes, ready.output) == (
        "ready",
        [28, 28, 1],
        10,
        "logits",
    )
    store.set_model_rejected(theirs.id, reason="it reads files")
    assert store.get_model(theirs.id).rejection == "it reads files"
    assert [r.id for r in store.list_models("local")] == [m.id]
    with pytest.raises(NotFound):
        store.delete_model(m.id, owner="bob")
    store.delete_model(m.id, owner="local")
    with pytest.raises(NotFound):
        store.get_model(m.id)


def test_dataset_lifecycle(store: JobStore) -> None:
    d, created = store.add_dataset(
        owner="local", name="d", sha256="b" * 64, size_bytes=5, num_samples=3, sample_shape=[2], num_classes=2
    )
    assert created and d.id.startswith("dst_") and d.sample_shape == [2]
    same, created = store.add_dataset(
        owner="local",
        name="d2",
        sha256="b" * 64,
        size_bytes=5,
        num_samples=3,
        sample_shape=[2],
        num_classes=2,
    )
    assert not created and same.id == d.id
    assert [x.id for x in store.list_datasets("local")] == [d.id]
    assert store.list_datasets("bob") == []
    store.delete_dataset(d.id, owner="local")
    with pytest.raises(NotFound):
        store.get_dataset(d.id)


def test_idempotency_key_returns_first_job_per_owner(store: JobStore) -> None:
    first, created = store.create_job(owner="local", kind="evaluation", spec={"a": 1}, idempotency_key="k1")
    assert created and first.status == "queued" and first.spec == {"a": 1}
    second, created = store.create_job(owner="local", kind="evaluation", spec={"a": 2}, idempotency_key="k1")
    assert not created and second.id == first.id and second.spec == {"a": 1}
    other, created = store.create_job(owner="bob", kind="evaluation", spec={"a": 1}, idempotency_key="k1")
    assert created and other.id != first.id
    _job(store)
    _job(store)  # no key: never deduplicated


def test_list_jobs_pagination_and_filters(store: JobStore) -> None:
    ids = [_job(store) for _ in range(5)]
    _job(store, owner="bob")
    page, cursor = store.list_jobs("local", limit=2)
    seen = [j.id for j in page]
    while cursor is not None:
        page, cursor = store.list_jobs("local", limit=2, cursor=cursor)
        seen += [j.id for j in page]
    assert seen == ids[::-1]
    store.request_cancel(ids[0], owner="local")
    cancelled, cursor = store.list_jobs("local", status="cancelled")
    assert [j.id for j in cancelled] == [ids[0]] and cursor is None
    assert store.list_jobs("local", kind="training")[0] == []
    with pytest.raises(InvalidCursor):
        store.list_jobs("local", cursor="garbage!")


def test_claim_progress_finish(store: JobStore) -> None:
    job_id = _job(store)
    job = store.claim(job_id, worker="w1", lease_seconds=60)
    assert job is not None and job.status == "running" and job.attempts == 1 and job.worker == "w1"
    assert job.started_at is not None and job.lease_until is not None
    assert store.claim(job_id, worker="w2", lease_seconds=60) is None  # live lease: not stolen
    assert store.report_progress(
        job_id, worker="w1", progress=Progress(fraction=0.5, stage="pgd"), lease_seconds=60
    )
    assert not store.report_progress(job_id, worker="w2", progress=Progress(fraction=0.6), lease_seconds=60)
    assert store.get_job(job_id).progress == {"fraction": 0.5, "stage": "pgd", "eta_seconds": None}
    assert not store.finish(job_id, worker="w2", status="succeeded", result={"x": 2})
    assert store.finish(job_id, worker="w1", status="succeeded", result={"x": 1})
    assert not store.finish(job_id, worker="w1", status="succeeded", result={"x": 3})  # never twice
    done = store.get_job(job_id)
    assert done.status == "succeeded" and done.result == {"x": 1} and done.finished_at is not None
    assert store.claim(job_id, worker="w3", lease_seconds=60) is None
    with pytest.raises(ValueError):
        store.finish(job_id, worker="w1", status="running")


def test_expired_lease_is_taken_over_and_the_old_worker_stops(store: JobStore, clock: ManualClock) -> None:
    job_id = _job(store)
    first = store.claim(job_id, worker="dead", lease_seconds=30)
    assert first is not None
    assert store.expired_leases() == []
    clock.advance(31)
    assert [j.id for j in store.expired_leases()] == [job_id]
    second = store.claim(job_id, worker="alive", lease_seconds=60)
    assert second is not None and second.attempts == 2 and second.started_at == first.started_at
    assert not store.report_progress(job_id, worker="dead", progress=Progress(fraction=0.1), lease_seconds=60)
    assert not store.finish(job_id, worker="dead", status="failed", error={"type": "x", "detail": "y"})
    assert store.finish(job_id, worker="alive", status="succeeded", result={})


def test_attempts_exhausted_fails_with_a_sentence(store: JobStore, clock: ManualClock) -> None:
    job_id = _job(store, max_attempts=2)
    for worker in ("w1", "w2"):
        assert store.claim(job_id, worker=worker, lease_seconds=30) is not None
        clock.advance(31)
    assert store.claim(job_id, worker="w3", lease_seconds=60) is None
    job = store.get_job(job_id)
    assert job.status == "failed" and job.error is not None
    assert job.error["type"] == "attempts_exhausted" and "2 times" in job.error["detail"]


def test_cancel_queued_then_claim_returns_none(store: JobStore) -> None:
    job_id = _job(store)
    job = store.request_cancel(job_id, owner="local")
    assert job.status == "cancelled" and job.finished_at is not None
    assert store.claim(job_id, worker="w", lease_seconds=60) is None
    assert store.get_job(job_id).status == "cancelled"
    with pytest.raises(NotFound):
        store.request_cancel(job_id, owner="bob")


def test_cancel_running_stops_the_worker_at_its_next_report(store: JobStore) -> None:
    job_id = _job(store)
    assert store.claim(job_id, worker="w", lease_seconds=60) is not None
    job = store.request_cancel(job_id, owner="local")
    assert job.status == "running" and job.cancel_requested
    assert not store.report_progress(job_id, worker="w", progress=Progress(fraction=0.2), lease_seconds=60)
    assert store.finish(job_id, worker="w", status="cancelled")
    assert store.get_job(job_id).status == "cancelled"
    terminal = store.request_cancel(job_id, owner="local")
    assert terminal.status == "cancelled"


def test_release_requeues_and_keeps_attempts(store: JobStore, clock: ManualClock) -> None:
    job_id = _job(store)
    assert store.claim(job_id, worker="w", lease_seconds=60) is not None
    store.release(job_id, worker="w")
    job = store.get_job(job_id)
    assert job.status == "queued" and job.attempts == 1 and job.worker is None
    assert store.stale_queued_jobs(older_than_seconds=10) == []
    clock.advance(11)
    assert [j.id for j in store.stale_queued_jobs(older_than_seconds=10)] == [job_id]
    assert store.stale_queued_jobs(older_than_seconds=3600) == []
    again = store.claim(job_id, worker="w2", lease_seconds=60)
    assert again is not None and again.attempts == 2


def test_two_threads_claiming_one_job_exactly_one_wins(store: JobStore) -> None:
    for _ in range(5):
        job_id = _job(store)
        barrier = threading.Barrier(2)
        results: list[object] = [None, None]

        def claim(
            i: int,
            job_id: str = job_id,
            barrier: threading.Barrier = barrier,
            results: list[object] = results,
        ) -> None:
            barrier.wait()
            results[i] = store.claim(job_id, worker=f"w{i}", lease_seconds=60)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert store.get_job(job_id).attempts == 1


def test_count_jobs_by_status(store: JobStore) -> None:
    _job(store)
    store.request_cancel(_job(store), owner="local")
    counts = store.count_jobs_by_status()
    assert counts["queued"] == 1 and counts["cancelled"] == 1 and counts["succeeded"] == 0


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(store: JobStore) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[tuple[str, bool]] = []

    def submit() -> None:
        barrier.wait()
        job, created = store.create_job(owner="local", kind="evaluation", spec={}, idempotency_key="same")
        outcomes.append((job.id, created))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job_id for job_id, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1


def test_stale_validating_models(store: JobStore, clock: ManualClock) -> None:
    m, _ = store.add_model(owner="local", name="m", sha256="c" * 64, format="h5", size_bytes=1, output="auto")
    assert store.stale_validating_models(older_than_seconds=10) == []
    clock.advance(11)
    assert [r.id for r in store.stale_validating_models(older_than_seconds=10)] == [m.id]
    assert store.stale_validating_models(older_than_seconds=3600) == []
    store.set_model_ready(m.id, input_shape=[2], num_classes=2, output="logits")
    assert store.stale_validating_models(older_than_seconds=10) == []


def test_a_running_validation_keeps_its_model_off_the_stale_list(store: JobStore, clock: ManualClock) -> None:
    # The reconciler must not send a model whose validation is still running to another worker.
    m, _ = store.add_model(owner="local", name="m", sha256="d" * 64, format="h5", size_bytes=1, output="auto")
    clock.advance(8)
    assert store.touch_model_validation(m.id) is True
    clock.advance(8)
    assert store.stale_validating_models(older_than_seconds=10) == []
    clock.advance(3)
    assert [r.id for r in store.stale_validating_models(older_than_seconds=10)] == [m.id]
    store.set_model_rejected(m.id, reason="no")
    assert store.touch_model_validation(m.id) is False  # settled: the heartbeat stops the validation
    assert store.touch_model_validation("mdl_missing") is False


def test_cancel_a_job_whose_worker_died_ends_it_at_once(store: JobStore, clock: ManualClock) -> None:
    job_id = _job(store)
    assert store.claim(job_id, worker="dead", lease_seconds=30) is not None
    clock.advance(31)
    assert store.request_cancel(job_id, owner="local").status == "cancelled"
    assert not store.finish(job_id, worker="dead", status="succeeded", result={})
