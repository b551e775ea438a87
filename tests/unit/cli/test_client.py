"""ParryClient on httpx.MockTransport: retries and backoff, idempotency keys, timeouts, error sentences."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.client import ApiError, ParryClient, ServiceUnreachable, WaitTimeout, zip_directory

Handler = Callable[[httpx.Request], httpx.Response]
JOB = {"id": "job_1", "kind": "evaluation", "status": "queued", "progress": None}


def problem(status: int, detail: str) -> httpx.Response:
    body = {"type": "/problems/X", "title": "X", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class Recorder:
    """A mock server: answers from a script (one entry per request) and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def client(self, **kwargs: Any) -> ParryClient:
        kwargs.setdefault("retries", 3)
        return ParryClient(
            "http://parry.test", transport=httpx.MockTransport(self), sleep=self.sleeps.append, **kwargs
        )


def test_5xx_is_retried_with_growing_backoff_and_the_same_idempotency_key() -> None:
    server = Recorder(
        problem(503, "busy"), httpx.Response(502), problem(500, "oops"), httpx.Response(202, json=JOB)
    )
    with server.client(retries=3, backoff=1.0, max_backoff=100) as client:
        job = client.submit_evaluation({"model_id": "mdl_1"})
    assert job["id"] == "job_1"
    assert len(server.requests) == 4
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(keys) == 1 and next(iter(keys)).startswith("parry-")
    # 1, 2, 4 seconds, each scaled by a jitter factor in [0.5, 1]
    assert len(server.sleeps) == 3
    for sleep, base in zip(server.sleeps, (1.0, 2.0, 4.0), strict=True):
        assert base * 0.5 <= sleep <= base


def test_every_submission_gets_its_own_key_unless_one_is_given() -> None:
    server = Recorder(httpx.Response(202, json=JOB))
    with server.client() as client:
        client.submit_evaluation({})
        client.submit_evaluation({})
        client.submit_evaluation({}, idempotency_key="ci-run-7")
        client.submit_training({}, idempotency_key="ci-run-7")
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert keys[0] != keys[1] and keys[2] == keys[3] == "ci-run-7"
    assert [r.url.path for r in server.requests][-1] == "/v1/trainings"


def test_connection_errors_are_retried_then_one_sentence() -> None:
    server = Recorder(httpx.ConnectError("refused"))
    with server.client(retries=2) as client, pytest.raises(ServiceUnreachable) as caught:
        client.get_job("job_1")
    message = str(caught.value)
    assert len(server.requests) == 3
    assert "http://parry.test" in message and "connection refused" in message and "3 attempts" in message
    assert "\n" not in message


def test_a_connection_error_then_success_returns_the_answer() -> None:
    server = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.Response(200, json=JOB))
    with server.client() as client:
        assert client.get_job("job_1") == JOB
    assert len(server.requests) == 3 and len(server.sleeps) == 2


def test_timeouts_are_set_and_retried() -> None:
    server = Recorder(httpx.ReadTimeout("slow"))
    with (
        server.client(retries=1, timeout=7.0) as client,
        pytest.raises(ServiceUnreachable, match="timed out"),
    ):
        client.health()
    timeout = server.requests[0].extensions["timeout"]
    assert timeout["read"] == 7.0 and timeout["connect"] == 7.0


def test_client_errors_are_not_retried_and_carry_the_problem_detail() -> None:
    server = Recorder(problem(422, "attacks.0.eps: Input should be greater than or equal to 0"))
    with server.client() as client, pytest.raises(ApiError) as caught:
        client.submit_evaluation({"attacks": [{"name": "pgd", "eps": -1}]})
    assert len(server.requests) == 1 and server.sleeps == []
    assert caught.value.status == 422
    assert str(caught.value) == "attacks.0.eps: Input should be greater than or equal to 0 (HTTP 422)"


def test_an_error_without_a_problem_body_still_makes_a_sentence() -> None:
    server = Recorder(httpx.Response(404, text="<html>nope</html>"))
    with server.client() as client, pytest.raises(ApiError, match=r"HTTP 404 to GET /v1/jobs/job_9"):
        client.get_job("job_9")


def test_401_says_what_to_do() -> None:
    server = Recorder(problem(401, "missing key"))
    with server.client() as client, pytest.raises(ApiError, match="PARRY_API_KEY"):
        client.list_models()


def test_retry_after_is_respected() -> None:
    server = Recorder(
        httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"items": []})
    )
    with server.client(backoff=0.1) as client:
        assert client.list_models() == []
    assert server.sleeps == [3.0]


def test_api_key_is_sent_as_bearer_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    server = Recorder(httpx.Response(200, json={"status": "ok"}))
    monkeypatch.setenv("PARRY_API_KEY", "s3cret")
    monkeypatch.setenv("PARRY_SERVER", "http://from-env:9000/")
    client = ParryClient.from_env(transport=httpx.MockTransport(server))
    assert client.server == "http://from-env:9000"
    client.health()
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert str(server.requests[0].url) == "http://from-env:9000/healthz"


def test_ensure_model_skips_the_upload_when_the_server_has_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    path.write_bytes(b"model bytes")
    sha = hashlib.sha256(b"model bytes").hexdigest()
    model = {"id": "mdl_1", "sha256": sha, "status": "ready"}
    server = Recorder(httpx.Response(200, json={"items": [model]}))
    with server.client() as client:
        assert client.ensure_model(path) == (model, False)
    assert len(server.requests) == 1 and server.requests[0].url.params["sha256"] == sha


def test_ensure_model_uploads_and_an_upload_is_retried_with_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"x" * 5000)
    server = Recorder(
        # a server without the sha256 filter answers every model: none has these bytes
        httpx.Response(200, json={"items": [{"id": "mdl_0", "sha256": "0" * 64}]}),
        httpx.Response(503),
        httpx.Response(201, json={"id": "mdl_2", "status": "validating"}),
    )
    with server.client() as client:
        model, uploaded = client.ensure_model(path, name="cnn", output="logits")
    assert uploaded and model["id"] == "mdl_2"
    uploads = [r for r in server.requests if r.method == "POST"]
    assert len(uploads) == 2
    for request in uploads:
        body = request.content
        assert body.count(b"x" * 5000) == 1 and b'name="name"' in body and b"logits" in body


def _no_events(handler: Handler) -> Handler:
    """A server without live events (an older one): 404 on /events, `handler` for the rest."""
    return lambda r: problem(404, "no such route") if r.url.path.endswith("/events") else handler(r)


def test_wait_job_polls_until_the_end_and_reports_each_poll() -> None:
    states = iter(["queued", "running", "running", "succeeded"])
    server = Recorder(_no_events(lambda r: httpx.Response(200, json={**JOB, "status": next(states)})))
    seen: list[str] = []
    with server.client() as client:
        job = client.wait_job("job_1", on_update=lambda j: seen.append(j["status"]))
    assert job["status"] == "succeeded" and seen == ["queued", "running", "running", "succeeded"]
    assert len(server.sleeps) == 3 and server.sleeps == sorted(server.sleeps)
    assert server.requests[0].url.path == "/v1/jobs/job_1/events"


def test_wait_job_gives_up_after_the_timeout() -> None:
    server = Recorder(_no_events(lambda r: httpx.Response(200, json={**JOB, "status": "running"})))
    with server.client() as client, pytest.raises(WaitTimeout, match="still running"):
        client.wait_job("job_1", timeout=0.0)


def _sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "retry: 2000\n\n: keep-alive\n\n" + "".join(
        f"id: {i}\nevent: {name}\ndata: {json.dumps(data)}\n\n" for i, (name, data) in enumerate(events)
    )


def test_wait_job_follows_the_live_events_then_reads_the_job_once() -> None:
    stream = _sse(
        ("status", {"id": "job_1", "status": "running", "progress": None}),
        ("progress", {"id": "job_1", "status": "running", "progress": {"fraction": 0.5, "stage": "pgd"}}),
        ("end", {"id": "job_1", "status": "succeeded", "error": None, "links": {}}),
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={**JOB, "status": "succeeded", "result": {"ok": 1}})

    server = Recorder(answer)
    seen: list[tuple[str, object]] = []
    with server.client() as client:
        job = client.wait_job("job_1", on_update=lambda j: seen.append((j["status"], j.get("progress"))))
    assert job["result"] == {"ok": 1}
    assert seen == [("running", None), ("running", {"fraction": 0.5, "stage": "pgd"}), ("succeeded", None)]
    assert [r.url.path for r in server.requests] == ["/v1/jobs/job_1/events", "/v1/jobs/job_1"]
    assert server.sleeps == []


def test_a_broken_event_stream_falls_back_to_polling() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise httpx.ReadError("cut")
        return httpx.Response(200, json={**JOB, "status": "cancelled"})

    server = Recorder(answer)
    with server.client() as client:
        assert client.wait_job("job_1")["status"] == "cancelled"


def test_download_streams_to_the_file_and_leaves_no_partial(tmp_path: Path) -> None:
    server = Recorder(httpx.ReadError("cut"), httpx.Response(200, content=b"\x00" * 10_000))
    with server.client() as client:
        path = client.download_artifact("job_1", "model.zip", tmp_path / "out" / "model.zip")
    assert path.read_bytes() == b"\x00" * 10_000
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.zip"]


def test_artifacts_accept_a_bare_list() -> None:
    artifacts = [{"name": "report.json", "size_bytes": 2, "sha256": "a", "url": "/x"}]
    server = Recorder(httpx.Response(200, content=json.dumps(artifacts).encode()))
    with server.client() as client:
        assert client.list_artifacts("job_1") == artifacts


def test_zipping_a_directory_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "saved_model"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"graph")
    (src / "variables" / "variables.index").write_bytes(b"index")
    first = zip_directory(src, tmp_path / "a.zip").read_bytes()
    (src / "saved_model.pb").touch()  # a newer mtime must not change the archive
    second = zip_directory(src, tmp_path / "b.zip").read_bytes()
    assert first == second
