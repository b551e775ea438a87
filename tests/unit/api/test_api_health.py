"""/healthz, /readyz, /metrics, problem+json for every error, and no TensorFlow in the API process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.api_helpers import Api, assert_problem, make_api, saved_model_zip, upload_model


def test_healthz(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_readyz_names_the_broker_when_it_is_down(api: Api) -> None:
    problem = assert_problem(api.client.get("/readyz"), 503)
    assert "broker" in str(problem["detail"]) and "database" not in str(problem["detail"])
    assert [e["loc"] for e in problem["errors"]] == [["broker"]]  # type: ignore[union-attr]


def test_readyz_with_a_live_redis(tmp_path: Path) -> None:
    import redis

    try:
        redis.Redis(socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    with make_api(tmp_path, redis_url="redis://127.0.0.1:6379/15") as api:
        r = api.client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "broker": "ok", "artifact store": "ok"}
        assert "parry_queue_depth " in api.client.get("/metrics").text


def test_metrics_counts_requests_and_jobs(api: Api) -> None:
    upload_model(api, saved_model_zip())
    api.client.get("/v1/jobs/job_nope")
    api.store.create_job(owner="local", kind="evaluation", spec={})
    r = api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'parry_http_requests_total{method="POST",route="/v1/models",status="201"} 1' in text
    assert 'parry_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1' in text
    assert 'parry_http_request_duration_seconds_count{method="POST",route="/v1/models"} 1' in text
    assert 'parry_jobs{status="queued"} 1' in text and 'parry_jobs{status="running"} 0' in text
    assert (
        "parry_broker_up 0" in text
        and "parry_queue_depth" not in text.replace("# ", "").split("parry_broker")[0]
    )


def test_unknown_route_and_wrong_method_are_problems(api: Api) -> None:
    assert_problem(api.client.get("/v1/nothing"), 404)
    problem = assert_problem(api.client.put("/v1/jobs"), 405)
    assert "PUT" in str(problem["detail"])


def test_unexpected_error_is_a_generic_500_problem(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret internals")

    api.store.list_models = boom  # type: ignore[method-assign]
    problem = assert_problem(api.client.get("/v1/models"), 500)
    assert "secret" not in str(problem["detail"])
    assert any("/v1/models" in rec.getMessage() for rec in caplog.records)


def test_openapi_docs(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    schema = api.client.get("/openapi.json").json()
    assert "/v1/evaluations" in schema["paths"] and "/v1/models" in schema["paths"]
    assert "multipart/form-data" in schema["paths"]["/v1/models"]["post"]["requestBody"]["content"]


def test_the_api_never_imports_tensorflow_or_workers(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; import service.api.main; "
        "from service.settings import Settings; "
        "service.api.main.create_app(Settings(data_dir=Path(sys.argv[1]))); "
        "bad = [m for m in ('tensorflow', 'keras', 'workers', 'sklearn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redis_socket_urls_are_understood() -> None:
    from service.api.queue import redis_client

    kwargs = redis_client(
        "redis+socket:///tmp/parry/redis.sock?virtual_host=2"
    ).connection_pool.connection_kwargs
    assert kwargs["path"] == "/tmp/parry/redis.sock" and kwargs["db"] == 2
    assert redis_client("redis://10.0.0.1:6380/3").connection_pool.connection_kwargs["port"] == 6380


def test_celery_enqueuer_puts_the_task_on_the_parry_queue(tmp_path: Path) -> None:
    import base64
    import json

    import redis

    from service.api.queue import CeleryEnqueuer
    from service.settings import Settings

    client = redis.Redis(db=15, socket_connect_timeout=0.5)
    try:
        client.delete("parry")
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    enqueuer = CeleryEnqueuer(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/15"))
    try:
        enqueuer.send("parry.run_evaluation", ["job_abc"])
        message = json.loads(client.lpop("parry"))  # type: ignore[arg-type]
        assert message["headers"]["task"] == "parry.run_evaluation"
        assert json.loads(base64.b64decode(message["body"]))[0] == ["job_abc"]
    finally:
        enqueuer.close()
        client.delete("parry")


def test_every_error_answer_is_documented_as_a_problem(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "default" in responses, (method, path)
            for code, response in responses.items():
                if code[0] in "45" or code == "default":
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
