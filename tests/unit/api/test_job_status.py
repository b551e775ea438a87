"""The `GET /v1/jobs/{id}` fast path: the same answer as the route, and the route for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.api.job_status import JobStatusFastPath
from service.auth import bearer_token, hash_key
from service.domain.jobs import JobStatus
from service.domain.results import Progress
from service.store.shards import ShardSpan, ShardStore
from tests.unit.api_helpers import Api, assert_problem, make_api
from tests.waiting import wait_until

KEY_A, KEY_B = "pk_fast-path-alice-0123456789", "pk_fast-path-bob-9876543210"


def _fast_path(api: Api) -> JobStatusFastPath:
    layer = api.client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, JobStatusFastPath):
        layer = layer.app
    return layer


def _decline(patch: pytest.MonkeyPatch, fast: JobStatusFastPath) -> None:
    """Make the fast path decline every request: neither its cache nor its database read answers."""
    patch.setattr(fast, "cached", lambda job_id, key: None)
    patch.setattr(fast, "read", lambda job_id, key: None)


def _route_answer(api: Api, path: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """What the FastAPI route answers: the fast path declines, so the request goes on to it."""
    with monkeypatch.context() as patch:
        _decline(patch, _fast_path(api))
        response = api.client.get(path)
    assert response.status_code == 200
    return response.content


def test_the_fast_path_answers_byte_for_byte_what_the_route_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_api(tmp_path) as api:
        spec = {"model_id": "mdl_x", "eps": [0.1]}
        job, _ = api.store.create_job(owner="local", kind="evaluation", spec=spec)
        queued = api.client.get(f"/v1/jobs/{job.id}")
        assert queued.status_code == 200 and queued.headers["content-type"] == "application/json"
        assert queued.content == _route_answer(api, f"/v1/jobs/{job.id}", monkeypatch)
        assert api.store.claim(job.id, worker="w", lease_seconds=60) is not None
        result = {"robust_accuracy": {"0.1": 0.5}, "clean_accuracy": 0.99, "note": "é ✓ </script>"}
        assert api.store.finish(job.id, worker="w", status="succeeded", result=result)
        done = api.client.get(f"/v1/jobs/{job.id}")
        assert done.content == _route_answer(api, f"/v1/jobs/{job.id}", monkeypatch)
        assert done.json()["result"] == result and done.json()["status"] == "succeeded"
        # It did come from the fast path: the middleware answers on its own.
        assert _fast_path(api).read(job.id, "") == done.content


def _route_response(api: Api, path: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, dict[str, str]]:
    with monkeypatch.context() as patch:
        _decline(patch, _fast_path(api))
        response = api.client.get(path)
    assert response.status_code == 200
    return response.content, dict(response.headers)


@pytest.mark.parametrize("status", [s.value for s in JobStatus] + ["sharded", "reused"])
def test_both_paths_give_identical_bodies_and_headers_in_every_state(
    api: Api, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    store = api.store
    job, _ = store.create_job(owner="local", kind="evaluation", spec={"model_id": "mdl_x", "eps": [0.1]})
    if status == "reused":
        assert store.claim(job.id, worker="w", lease_seconds=60)
        assert store.finish(job.id, worker="w", status=JobStatus.SUCCEEDED, result={"clean_accuracy": 1.0})
        job, _ = store.create_job(owner="local", kind="evaluation", spec={}, reuse=store.get_job(job.id))
    elif status != "queued":
        assert store.claim(job.id, worker="w", lease_seconds=60)
        store.report_progress(
            job.id, worker="w", progress=Progress(fraction=0.25, stage="é"), lease_seconds=60
        )
    if status == "sharded":
        assert ShardStore(store).create_plan(
            job.id, coordinator="w", spans=[ShardSpan(0, 1, 1.0)], clean_units=1.0, total_units=2.0
        )
    elif status in ("succeeded", "failed"):
        error = None if status == "succeeded" else {"type": "DatasetError", "detail": "gone </script>"}
        result = {"clean_accuracy": 0.5} if status == "succeeded" else None
        assert store.finish(job.id, worker="w", status=JobStatus(status), result=result, error=error)
    elif status == "cancelled":
        store.request_cancel(job.id, owner="local")
        store.release(job.id, worker="w")
    assert store.get_job(job.id).status == (
        "running" if status == "sharded" else status.replace("reused", "succeeded")
    )
    path = f"/v1/jobs/{job.id}"
    fast = api.client.get(path)
    assert _fast_path(api).read(job.id, "") == fast.content  # it did come from the fast path
    body, headers = _route_response(api, path, monkeypatch)
    assert fast.content == body
    assert dict(fast.headers) == headers
    # Answered from the cache once the poller runs: the same bytes and headers again.
    cache = _fast_path(api).cache
    assert cache is not None
    # (A read fills the cache; the poller's first poll, or one late on a busy machine, empties it.)
    wait_until(lambda: api.client.get(path).content == body and _fast_path(api).cached(job.id, "") == body)
    again = api.client.get(path)
    assert again.content == body and dict(again.headers) == headers


def test_a_query_string_goes_to_the_route(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    job, _ = api.store.create_job(owner="local", kind="evaluation", spec={})
    seen: list[str] = []
    monkeypatch.setattr(_fast_path(api), "cached", lambda job_id, key: seen.append(f"cached {job_id}"))
    monkeypatch.setattr(_fast_path(api), "read", lambda job_id, key: seen.append(job_id))
    assert api.client.get(f"/v1/jobs/{job.id}?x=1").status_code == 200
    assert seen == []
    api.client.get(f"/v1/jobs/{job.id}")
    assert seen == [f"cached {job.id}", job.id]


def test_the_route_answers_what_the_fast_path_does_not(tmp_path: Path) -> None:
    with make_api(tmp_path) as api:
        fast = _fast_path(api)
        assert fast.read("job_missing", "") is None
        problem = assert_problem(api.client.get("/v1/jobs/job_missing"), 404)
        assert "job_missing" in str(problem["detail"])
        # Another owner's job is as unknown as a missing one.
        other, _ = api.store.create_job(owner="someone-else", kind="evaluation", spec={})
        assert fast.read(other.id, "") is None
        assert_problem(api.client.get(f"/v1/jobs/{other.id}"), 404)
        # Other methods and deeper paths are the app's.
        assert api.client.post(f"/v1/jobs/{other.id}").status_code == 405
        assert_problem(api.client.get(f"/v1/jobs/{other.id}/report"), 404)


def test_keys_are_checked_as_the_route_checks_them(tmp_path: Path) -> None:
    with make_api(tmp_path) as api:
        fast = _fast_path(api)
        alice = api.store.add_api_key(name="alice", key_sha256=hash_key(KEY_A))
        api.store.add_api_key(name="bob", key_sha256=hash_key(KEY_B))
        job, _ = api.store.create_job(owner=alice.id, kind="evaluation", spec={})
        assert fast.read(job.id, KEY_A) is not None
        assert (
            api.client.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"bearer  {KEY_A} "}).json()["id"]
            == job.id
        )
        for headers in ({}, {"Authorization": f"Bearer {KEY_B}"}, {"Authorization": f"Basic {KEY_A}"}):
            response = api.client.get(f"/v1/jobs/{job.id}", headers=headers)
            assert response.status_code in (401, 404), headers
            assert response.headers["content-type"] == "application/problem+json"
        assert fast.read(job.id, "") is None and fast.read(job.id, KEY_B) is None
        # Alice's key and job are in the cache now.
        assert fast.cache is not None
        wait_until(lambda: fast.read(job.id, KEY_A) is not None and fast.cached(job.id, KEY_A) is not None)
        assert fast.cached(job.id, KEY_B) is None and fast.cached(job.id, "") is None
        # Revocation applies at once to a read from the database, and to the cache within its freshness
        # bound: the next poll sees the keys table change and forgets every key's owner.
        api.store.revoke_api_key(alice.id)
        assert fast.read(job.id, KEY_A) is None
        wait_until(lambda: fast.cached(job.id, KEY_A) is None)
        revoked = api.client.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {KEY_A}"})
        assert_problem(revoked, 401)


def test_fast_path_requests_are_counted_under_the_route_template(tmp_path: Path) -> None:
    with make_api(tmp_path) as api:
        job, _ = api.store.create_job(owner="local", kind="evaluation", spec={})
        for _ in range(3):
            assert api.client.get(f"/v1/jobs/{job.id}").status_code == 200
        metrics = api.client.get("/metrics").text
        assert 'parry_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 3' in metrics


@pytest.mark.parametrize(
    ("header", "key"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", ""), ("", ""), ("Bearer", "")],
)
def test_bearer_token(header: str, key: str) -> None:
    assert bearer_token(header) == key


def test_reads_in_a_reading_block_share_one_connection(tmp_path: Path) -> None:
    import sqlalchemy as sa

    with make_api(tmp_path) as api:
        store = api.store
        job, _ = store.create_job(owner="local", kind="evaluation", spec={})
        checkouts: list[object] = []
        sa.event.listen(store.engine, "checkout", lambda *args: checkouts.append(args))
        store.has_api_keys()
        store.find_job(job.id, owner="local")
        assert len(checkouts) == 2
        with store.reading():
            assert not store.has_api_keys()
            assert store.find_job(job.id, owner="local") == store.find_job(job.id)
            with store.reading():  # nested: still the same connection
                assert store.find_job("job_missing") is None
        assert len(checkouts) == 3
        # What the fast path does per request: one checkout for the key check and the row.
        assert api.client.get(f"/v1/jobs/{job.id}").status_code == 200
        assert len(checkouts) == 4
