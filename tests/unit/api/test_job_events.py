"""Live job events: the SSE stream `GET /v1/jobs/{id}/events` and the long poll `GET /v1/jobs/{id}?wait=`.

The TestClient hands over a streamed body once it ends, so these tests change the job from another thread
once the request waits (`JobWatch.listeners()`), and read the events afterwards. Changes come from this
process (its commit listener wakes waiters) and from another store on the same database, as a worker's
would (only the change feed's poller sees those).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from service.api.job_events import JobWatch
from service.domain.results import Progress
from service.store.jobs import JobStore
from tests.unit.api_helpers import Api, assert_problem


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def _watch(api: Api) -> JobWatch:
    watch: JobWatch = api.client.app.state.job_watch  # type: ignore[attr-defined]
    return watch


def _meanwhile(api: Api, wait_until: Callable[..., None], steps: Callable[[], None]) -> threading.Thread:
    """Run `steps` on a thread as soon as a request waits on the job."""

    def run() -> None:
        wait_until(lambda: _watch(api).listeners() > 0)
        steps()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _job(api: Api, owner: str = "local") -> str:
    job, _ = api.store.create_job(owner=owner, kind="evaluation", spec={"model_id": "mdl_x"})
    return job.id


def test_a_finished_job_streams_its_status_and_the_end_at_once(api: Api) -> None:
    job_id = _job(api)
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is not None
    assert api.store.finish(job_id, worker="w", status="succeeded", result={"ok": 1})
    response = api.client.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    events = _events(response.text)
    assert [name for name, _ in events] == ["status", "end"]
    assert events[0][1]["status"] == "succeeded"
    assert events[1][1]["links"]["report"] == f"/v1/jobs/{job_id}/report"
    assert events[1][1]["status"] == "succeeded" and events[1][1]["error"] is None


def test_the_stream_follows_a_job_to_its_end(api: Api, wait_until: Callable[..., None]) -> None:
    job_id = _job(api)
    # Another store on the same database, like a worker: its commits reach the API through the feed only.
    worker = JobStore(api.settings.resolved_database_url)

    def work() -> None:
        assert worker.claim(job_id, worker="w", lease_seconds=60) is not None
        assert worker.report_progress(
            job_id, worker="w", progress=Progress(fraction=0.5, stage="pgd"), lease_seconds=60
        )
        assert worker.finish(job_id, worker="w", status="failed", error={"type": "X", "detail": "broke"})

    thread = _meanwhile(api, wait_until, work)
    try:
        events = _events(api.client.get(f"/v1/jobs/{job_id}/events").text)
    finally:
        thread.join()
        worker.dispose()
    assert events[0] == (
        "status",
        {"id": job_id, "status": "queued", "progress": None, "cancel_requested": False},
    )
    # Changes close together may reach the stream as one; the order and the end never change.
    statuses = [data["status"] for name, data in events if name == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "failed"
    assert statuses == [s for s in ("queued", "running", "failed") if s in statuses]
    name, end = events[-1]
    assert name == "end" and end["status"] == "failed" and end["error"]["detail"] == "broke"
    assert _watch(api).listeners() == 0


def test_a_cancel_in_this_process_ends_the_stream(api: Api, wait_until: Callable[..., None]) -> None:
    job_id = _job(api)
    thread = _meanwhile(api, wait_until, lambda: api.client.post(f"/v1/jobs/{job_id}/cancel"))
    try:
        events = _events(api.client.get(f"/v1/jobs/{job_id}/events").text)
    finally:
        thread.join()
    assert [name for name, _ in events] == ["status", "status", "end"]
    assert events[-1][1]["status"] == "cancelled"


def test_the_long_poll_answers_when_the_status_changes(api: Api, wait_until: Callable[..., None]) -> None:
    job_id = _job(api)
    thread = _meanwhile(api, wait_until, lambda: api.store.claim(job_id, worker="w", lease_seconds=60))
    try:
        job = api.client.get(f"/v1/jobs/{job_id}?wait=30").json()
    finally:
        thread.join()
    assert job["status"] == "running" and job["id"] == job_id


def test_the_long_poll_ignores_progress_and_ends_with_its_wait(
    api: Api, wait_until: Callable[..., None]
) -> None:
    job_id = _job(api)
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is not None

    def progress() -> None:
        api.store.report_progress(job_id, worker="w", progress=Progress(fraction=0.25), lease_seconds=60)

    thread = _meanwhile(api, wait_until, progress)
    try:
        job = api.client.get(f"/v1/jobs/{job_id}?wait=0.5").json()
    finally:
        thread.join()
    # The status never changed, so the answer came at the end of the wait, with the latest progress.
    assert job["status"] == "running"
    assert job["progress"]["fraction"] == 0.25


def test_a_finished_job_answers_the_long_poll_at_once(api: Api) -> None:
    job_id = _job(api)
    api.client.post(f"/v1/jobs/{job_id}/cancel")
    assert api.client.get(f"/v1/jobs/{job_id}?wait=60").json()["status"] == "cancelled"
    assert _watch(api).listeners() == 0


def test_events_and_long_poll_keep_the_job_rules(api: Api) -> None:
    other = _job(api, owner="someone-else")
    assert_problem(api.client.get(f"/v1/jobs/{other}/events"), 404)
    assert_problem(api.client.get(f"/v1/jobs/{other}?wait=1"), 404)
    assert_problem(api.client.get("/v1/jobs/job_nope/events"), 404)
    mine = _job(api)
    problem = assert_problem(api.client.get(f"/v1/jobs/{mine}?wait=61"), 422)
    assert problem["errors"][0]["loc"] == ["query", "wait"]  # type: ignore[index]
    assert_problem(api.client.get(f"/v1/jobs/{mine}?wait=-1"), 422)


def test_events_need_the_key_when_keys_exist(tmp_path: Any) -> None:
    from tests.unit.api_helpers import make_api

    with make_api(tmp_path, api_keys="pk_events-key-0123456789") as keyed:
        job, _ = keyed.store.create_job(owner="local", kind="evaluation", spec={})
        assert_problem(keyed.client.get(f"/v1/jobs/{job.id}/events"), 401)
        assert_problem(keyed.client.get(f"/v1/jobs/{job.id}?wait=1"), 401)


def test_a_stopping_server_closes_the_streams(api: Api, wait_until: Callable[..., None]) -> None:
    job_id = _job(api)
    thread = _meanwhile(api, wait_until, _watch(api).close)
    try:
        events = _events(api.client.get(f"/v1/jobs/{job_id}/events").text)
    finally:
        thread.join()
    assert [name for name, _ in events] == ["status"]  # no `end`: the job has not ended
    assert api.client.get(f"/v1/jobs/{job_id}?wait=30").json()["status"] == "queued"  # answers at once


def test_listeners_of_a_job_share_one_read_per_change(api: Api) -> None:
    import asyncio

    watch = _watch(api)
    job_id = _job(api)
    reads: list[int] = []

    def read() -> Any:
        reads.append(1)
        return api.store.find_job(job_id)

    async def listen() -> list[str]:
        seen: list[str] = []
        async for job in watch.follow(job_id, read, timeout=None):
            seen.append(job.status)
            if job.status == "cancelled":
                return seen
        return seen

    async def main() -> list[list[str]]:
        listeners = [asyncio.ensure_future(listen()) for _ in range(8)]
        while watch.listeners() < 8:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(api.store.request_cancel, job_id, owner="local")
        return list(await asyncio.gather(*listeners))

    results = asyncio.run(main())
    assert all(r[0] == "queued" and r[-1] == "cancelled" for r in results)
    # One read for the first look and a few per change (this process's commit, then the feed's report),
    # however many listen.
    assert len(reads) <= 4, len(reads)
