"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis): no request, valid or
not, gets a 5xx, and every answer conforms to the schema (status codes, content types, bodies, headers;
invalid data rejected). Bounded: a few dozen examples per operation, well under a minute in all.

Three of schemathesis's checks are left out, each for a reason the schema cannot carry:
- `positive_data_acceptance`: some rules are not expressible in JSON Schema (an upload's bytes must be a
  model or an `.npz`; a cursor must be one the server returned; cross-field rules such as `target` only
  with `targeted: true`), so schema-valid requests can get a 422; docs/api.md lists those rules;
- `ignored_auth`: every request here carries the test's own valid key (auth is tested in test_auth.py);
- `not_a_server_error` on `/readyz`, whose documented answer while the broker is down is 503.

The app runs in-process (ASGI) on a temporary SQLite store with a recording enqueuer, once in open mode
and once with API keys; a model, a dataset and a succeeded job exist so that some generated ids hit.
`/readyz` may answer 503: that is its documented answer while the broker is down, as it is here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from service.api.main import create_app
from service.settings import Settings
from tests.unit import api_helpers
from tests.unit.api_helpers import DEAD_REDIS, RecordingEnqueuer, npz_bytes, saved_model_zip

KEY = "pk_fuzz-key-0123456789abcdef"


def _app(root: Path, **overrides: Any) -> Any:
    settings = Settings(
        data_dir=root / "data",
        database_url=f"sqlite:///{root / 'data' / 'parry.db'}",
        redis_url=DEAD_REDIS,
        max_upload_bytes=1024 * 1024,
        **overrides,
    )
    return create_app(settings, enqueuer=RecordingEnqueuer())


def _seed(client: Any, headers: dict[str, str]) -> None:
    """A model, a dataset and a succeeded evaluation, so that not every id is unknown."""
    r = client.post("/v1/models", files={"file": ("m.zip", saved_model_zip())}, headers=headers)
    model_id = r.json()["id"]
    store = client.app.state.store
    store.set_model_ready(model_id, input_shape=[8, 8, 1], num_classes=3, output="logits")
    data = npz_bytes(x=np.zeros((3, 8, 8, 1), np.float32), y=np.array([0, 1, 2]))
    dataset_id = client.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=headers).json()["id"]
    spec = {"model_id": model_id, "dataset_id": dataset_id, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    job_id = client.post("/v1/evaluations", json=spec, headers=headers).json()["id"]
    assert store.claim(job_id, worker="w", lease_seconds=60) is not None
    store.finish(job_id, worker="w", status="succeeded", result={"model_id": model_id})


@pytest.fixture(scope="module", params=["open", "keys"])
def fuzzed_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    keyed = request.param == "keys"
    app = _app(tmp_path_factory.mktemp("fuzz"), **({"api_keys": KEY} if keyed else {}))
    client_class: Any = api_helpers.TestClient  # type: ignore[attr-defined]  # imported there quietly
    with client_class(app, raise_server_exceptions=False) as client:  # runs the lifespan (schema creation)
        headers = {"Authorization": f"Bearer {KEY}"} if keyed else {}
        _seed(client, headers)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        # The coverage phase (schema-boundary cases) takes about 40 s here, mostly on the evaluation body;
        # PARRY_FUZZ_COVERAGE=1 turns it on for a deeper run. Fuzzing makes valid and invalid requests.
        schema.config.phases.coverage.enabled = os.environ.get("PARRY_FUZZ_COVERAGE") == "1"
        yield schema, headers


schema = schemathesis.pytest.from_fixture("fuzzed_api_schema")


@pytest.fixture(scope="module")
def fuzzed_api_schema(fuzzed_api: Any) -> Any:
    return fuzzed_api[0]


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: Any, fuzzed_api: Any) -> None:
    _, headers = fuzzed_api
    excluded = [checks.positive_data_acceptance, checks.ignored_auth]
    if case.path == "/readyz":
        excluded.append(checks.not_a_server_error)
    response = case.call_and_validate(headers=headers, excluded_checks=excluded)
    if case.path == "/readyz" and response.status_code == 503:
        return  # the documented answer while the broker is down, as it is here
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    )
    if response.status_code >= 400:
        content_type = response.headers.get("content-type")
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type == "application/problem+json", response.text
