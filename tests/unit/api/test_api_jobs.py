"""/v1/jobs: list with pagination and filters, get, cancel, report, artifacts."""

from __future__ import annotations

from service.store.artifacts import ArtifactStore
from tests.unit.api_helpers import Api, assert_problem


def _job(api: Api, kind: str = "evaluation") -> str:
    job, _ = api.store.create_job(owner="local", kind=kind, spec={"model_id": "mdl_x"})
    return job.id


def _succeed(api: Api, job_id: str, result: dict[str, object]) -> None:
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is not None
    assert api.store.finish(job_id, worker="w", status="succeeded", result=result)


def test_list_is_newest_first_and_paginated(api: Api) -> None:
    ids = [_job(api) for _ in range(5)]
    training = _job(api, "training")
    api.store.create_job(owner="someone-else", kind="evaluation", spec={})
    seen: list[str] = []
    url = "/v1/jobs?limit=2&kind=evaluation"
    while True:
        page = api.client.get(url).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/jobs?limit=2&kind=evaluation&cursor={page['next_cursor']}"
    assert seen == ids[::-1]
    assert [j["id"] for j in api.client.get("/v1/jobs?kind=training").json()["items"]] == [training]
    assert len(api.client.get("/v1/jobs").json()["items"]) == 6


def test_list_rejects_bad_parameters(api: Api) -> None:
    assert_problem(api.client.get("/v1/jobs?limit=201"), 422)
    assert_problem(api.client.get("/v1/jobs?limit=0"), 422)
    problem = assert_problem(api.client.get("/v1/jobs?status=done"), 422)
    assert problem["errors"][0]["loc"] == ["query", "status"]  # type: ignore[index]
    assert_problem(api.client.get("/v1/jobs?cursor=@@@"), 422)


def test_get_shows_the_job_and_unknown_is_404(api: Api) -> None:
    job_id = _job(api)
    job = api.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["progress"] is None and job["result"] is None
    assert job["links"] == {
        "self": f"/v1/jobs/{job_id}",
        "report": f"/v1/jobs/{job_id}/report",
        "artifacts": f"/v1/jobs/{job_id}/artifacts",
    }
    assert str(job["created_at"]).endswith("Z") and job["started_at"] is None
    problem = assert_problem(api.client.get("/v1/jobs/job_nope"), 404)
    assert "job_nope" in str(problem["detail"])
    other, _ = api.store.create_job(owner="someone-else", kind="evaluation", spec={})
    assert_problem(api.client.get(f"/v1/jobs/{other.id}"), 404)  # another owner's job does not exist


def test_cancel_queued_job_never_starts(api: Api) -> None:
    job_id = _job(api)
    r = api.client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is None
    assert api.client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert_problem(api.client.post("/v1/jobs/job_nope/cancel"), 404)


def test_cancel_running_job_asks_the_worker_to_stop(api: Api) -> None:
    job_id = _job(api)
    api.store.claim(job_id, worker="w", lease_seconds=60)
    body = api.client.post(f"/v1/jobs/{job_id}/cancel").json()
    assert body["status"] == "running" and body["cancel_requested"] is True


def test_report_is_409_until_succeeded_then_the_result(api: Api) -> None:
    job_id = _job(api)
    problem = assert_problem(api.client.get(f"/v1/jobs/{job_id}/report"), 409)
    assert "queued" in str(problem["detail"])
    _succeed(api, job_id, {"num_samples": 3, "clean_accuracy": 1.0})
    report = api.client.get(f"/v1/jobs/{job_id}/report")
    assert report.status_code == 200 and report.json() == {"num_samples": 3, "clean_accuracy": 1.0}
    assert api.client.get(f"/v1/jobs/{job_id}/report?format=json").json()["num_samples"] == 3
    html = api.client.get(f"/v1/jobs/{job_id}/report?format=html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert_problem(api.client.get(f"/v1/jobs/{job_id}/report?format=pdf"), 422)


def test_report_of_a_failed_job_says_why(api: Api) -> None:
    job_id = _job(api)
    api.store.claim(job_id, worker="w", lease_seconds=60)
    api.store.finish(
        job_id, worker="w", status="failed", error={"type": "x", "detail": "the model is broken"}
    )
    problem = assert_problem(api.client.get(f"/v1/jobs/{job_id}/report"), 409)
    assert "the model is broken" in str(problem["detail"])


def test_artifacts_listed_and_downloaded(api: Api) -> None:
    job_id = _job(api)
    assert api.client.get(f"/v1/jobs/{job_id}/artifacts").json() == []
    store = ArtifactStore(api.settings.data_dir)  # what a worker on the same volume does
    info = store.write_job_artifact(job_id, "adversarial_examples.npz", b"\x93NUMPY")
    items = api.client.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert items == [
        {
            "name": "adversarial_examples.npz",
            "size_bytes": 6,
            "sha256": info.sha256,
            "url": f"/v1/jobs/{job_id}/artifacts/adversarial_examples.npz",
        }
    ]
    r = api.client.get(items[0]["url"])
    assert r.status_code == 200 and r.content == b"\x93NUMPY"
    assert_problem(api.client.get(f"/v1/jobs/{job_id}/artifacts/missing.npz"), 404)
    assert_problem(api.client.get(f"/v1/jobs/{job_id}/artifacts/..%2F..%2Fparry.db"), 404)
    assert_problem(api.client.get("/v1/jobs/job_nope/artifacts"), 404)
