"""Worker helpers that need neither TensorFlow nor a broker: model cache, heartbeat, reconciler, callbacks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from service.domain.results import Progress
from service.domain.tasks import RUN_EVALUATION, VALIDATE_MODEL
from service.store.jobs import JobStore
from tests.clock import ManualClock
from workers.runtime import heartbeat as heartbeat_module
from workers.runtime.callbacks import CallbackFailed, deliver
from workers.runtime.heartbeat import Heartbeat
from workers.runtime.reconciler import Reconciler


def test_heartbeat_writes_progress_at_most_once_per_interval_and_renews_without_progress() -> None:
    writes: list[tuple[float, Progress]] = []

    def report(progress: Progress) -> bool:
        writes.append((time.monotonic(), progress))
        return True

    with Heartbeat(report, time_limit_s=60, min_interval_s=0.1, renew_every_s=0.3) as hb:
        for i in range(50):  # the engine reports far more often than the store is written
            hb.update(Progress(fraction=i / 100, stage="fgsm"))
            time.sleep(0.005)
        time.sleep(0.8)  # no new progress: only lease renewals
    assert 2 <= len(writes) <= 12
    assert writes[-1][1].fraction == pytest.approx(0.49)
    gaps = [b[0] - a[0] for a, b in zip(writes, writes[1:], strict=False)]
    assert min(gaps) >= 0.09


def test_heartbeat_stops_on_store_answer_and_on_time_limit(wait_until: Callable[..., None]) -> None:
    answers = iter([True, False])
    with Heartbeat(
        lambda _p: next(answers, False), time_limit_s=60, min_interval_s=0.05, renew_every_s=0.05
    ) as hb:
        wait_until(hb.should_stop, timeout=30)
    assert hb.stop_reason == "stop_requested"

    with Heartbeat(lambda _p: True, time_limit_s=0.05) as hb:
        time.sleep(0.1)
        assert hb.should_stop()
    assert hb.stop_reason == "time_limit"


def test_a_silent_job_learns_of_its_cancel_from_the_poll_not_the_next_renewal(
    wait_until: Callable[..., None],
) -> None:
    # The model makes no progress (a hang): nothing is written until the renewal an hour away, but the
    # cheap poll between beats still turns a cancel into a stop.
    cancelled = threading.Event()
    reports: list[Progress] = []

    def report(progress: Progress) -> bool:
        reports.append(progress)
        return True

    with Heartbeat(
        report, poll=cancelled.is_set, time_limit_s=60, min_interval_s=0.05, renew_every_s=3600
    ) as hb:
        time.sleep(0.2)
        assert not hb.should_stop()
        cancelled.set()
        wait_until(hb.should_stop, timeout=30)
    assert hb.stop_reason == "stop_requested"
    assert [p.stage for p in reports] == ["starting"]  # the first beat's write, then nothing


def test_heartbeat_stops_when_the_worker_shuts_down() -> None:
    try:
        with Heartbeat(lambda _p: True, time_limit_s=60) as hb:
            assert not hb.should_stop()
            heartbeat_module.SHUTTING_DOWN.set()
            assert hb.should_stop()
        assert hb.stop_reason == "shutdown"
    finally:
        heartbeat_module.SHUTTING_DOWN.clear()


def test_reconciler_resends_lost_jobs_and_stuck_validations_once(store: JobStore, clock: ManualClock) -> None:
    sent: list[tuple[str, str]] = []
    model, _ = store.add_model(
        owner="k", name="m", sha256="a" * 64, format="keras", size_bytes=1, output="auto"
    )
    running, _ = store.create_job(owner="k", kind="evaluation", spec={})
    queued, _ = store.create_job(owner="k", kind="evaluation", spec={})
    fresh_running, _ = store.create_job(owner="k", kind="evaluation", spec={})
    assert store.claim(running.id, worker="dead", lease_seconds=30)
    assert store.claim(fresh_running.id, worker="alive", lease_seconds=600)
    clock.advance(31)

    reconciler = Reconciler(
        store, lambda task, job_id: sent.append((task, job_id)), requeue_queued_after_s=0.1, resend_after_s=60
    )
    assert sorted(reconciler.run_once()) == sorted([running.id, queued.id, model.id])
    assert sorted(sent) == sorted(
        [(RUN_EVALUATION, running.id), (RUN_EVALUATION, queued.id), (VALIDATE_MODEL, model.id)]
    )
    assert reconciler.run_once() == []  # not again within resend_after_s
    # The resent job is claimable by a new worker, because the dead worker's lease expired.
    assert store.claim(running.id, worker="new", lease_seconds=60) is not None


class _Receiver:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)


def test_callback_posts_the_job_and_raises_for_retry_on_failure(store: JobStore) -> None:
    job, _ = store.create_job(owner="k", kind="evaluation", spec={"callback_url": "http://cb.test/hook"})
    assert store.claim(job.id, worker="w", lease_seconds=60)
    assert store.finish(job.id, worker="w", status="succeeded", result={"clean_accuracy": 1.0})

    receiver = _Receiver([503])
    with pytest.raises(CallbackFailed, match="503"):
        deliver(store, job.id, client=httpx.Client(transport=httpx.MockTransport(receiver)))
    assert deliver(store, job.id, client=httpx.Client(transport=httpx.MockTransport(receiver)))
    body = receiver.bodies[-1]
    assert body["id"] == job.id and body["status"] == "succeeded"
    assert body["result"] == {"clean_accuracy": 1.0}
    assert body["links"] == {
        "self": f"/v1/jobs/{job.id}",
        "report": f"/v1/jobs/{job.id}/report",
        "artifacts": f"/v1/jobs/{job.id}/artifacts",
    }


def test_callback_unreachable_is_a_retry_and_no_url_is_nothing(store: JobStore) -> None:
    job, _ = store.create_job(owner="k", kind="evaluation", spec={"callback_url": "http://cb.test/hook"})

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(CallbackFailed, match="could not reach"):
        deliver(store, job.id, client=httpx.Client(transport=httpx.MockTransport(refuse)))
    plain, _ = store.create_job(owner="k", kind="evaluation", spec={})
    assert deliver(store, plain.id) is False
    assert deliver(store, "job_missing") is False


def test_threads_left_behind_are_daemons() -> None:
    # The heartbeat thread must never keep a worker process alive.
    with Heartbeat(lambda _p: True, time_limit_s=60) as hb:
        assert hb._thread.daemon
    assert not any(t.name == "parry-heartbeat" and t.is_alive() for t in threading.enumerate())
