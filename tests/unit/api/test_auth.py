"""API keys: bearer auth on /v1, owners kept apart (404, never 403), open mode, revocation, bind refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from httpx import Response
from pydantic import SecretStr

from service.auth import KeyRing, hash_key, is_loopback, open_bind_problem
from service.cli.main import main as parry_main
from service.cli.server import ServeError, api, serve
from service.settings import Settings
from service.store.jobs import JobStore
from tests.unit.api_helpers import Api, assert_problem, make_api, npz_bytes, saved_model_zip

KEY_A, KEY_B = "pk_test-key-of-alice-0123456789", "pk_test-key-of-bob-9876543210"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def env_keys_api(tmp_path: Path) -> Iterator[Api]:
    with make_api(tmp_path, api_keys=f"{KEY_A}, {KEY_B}") as api:
        yield api


def _assert_401(response: Response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def _resources_of(api: Api, key: str) -> dict[str, str]:
    """A model, a dataset, a succeeded job with an artifact: everything one key can own."""
    client, headers = api.client, _auth(key)
    r = client.post("/v1/models", files={"file": ("m.zip", saved_model_zip(key.encode()))}, headers=headers)
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    api.store.set_model_ready(model_id, input_shape=[8, 8, 1], num_classes=3, output="logits")
    data = npz_bytes(x=np.zeros((6, 8, 8, 1), np.float32), y=np.array([0, 1, 2, 0, 1, 2]))
    r = client.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=headers)
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    spec = {"model_id": model_id, "dataset_id": dataset_id, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    r = client.post("/v1/evaluations", json=spec, headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert api.store.claim(job_id, worker="w", lease_seconds=60) is not None
    assert api.store.finish(job_id, worker="w", status="succeeded", result={"ok": True})
    api.client.app.state.artifacts.write_job_artifact(job_id, "examples.npz", b"bytes")  # type: ignore[attr-defined]
    return {"model": model_id, "dataset": dataset_id, "job": job_id}


def test_two_keys_never_see_each_others_resources(env_keys_api: Api) -> None:
    api = env_keys_api
    mine = _resources_of(api, KEY_A)
    theirs = _resources_of(api, KEY_B)
    client, b = api.client, _auth(KEY_B)
    for path in (
        f"/v1/models/{mine['model']}",
        f"/v1/datasets/{mine['dataset']}",
        f"/v1/jobs/{mine['job']}",
        f"/v1/jobs/{mine['job']}/report",
        f"/v1/jobs/{mine['job']}/report?format=html",
        f"/v1/jobs/{mine['job']}/artifacts",
        f"/v1/jobs/{mine['job']}/artifacts/examples.npz",
        f"/ui/api/jobs/{mine['job']}",
        f"/ui/jobs/{mine['job']}",
        f"/ui/jobs/{mine['job']}/artifacts/examples.npz",
    ):
        assert client.get(path, headers=b).status_code == 404, path
        assert client.get(path, headers=_auth(KEY_A)).status_code == 200, path
    assert_problem(client.post(f"/v1/jobs/{mine['job']}/cancel", headers=b), 404)
    assert_problem(client.delete(f"/v1/models/{mine['model']}", headers=b), 404)
    assert_problem(client.delete(f"/v1/datasets/{mine['dataset']}", headers=b), 404)
    spec = {
        "model_id": mine["model"],
        "dataset_id": theirs["dataset"],
        "attacks": [{"name": "fgsm", "eps": [0.1]}],
    }
    assert_problem(client.post("/v1/evaluations", json=spec, headers=b), 404)
    # Lists show only one's own; the same bytes uploaded by another key are another resource.
    assert [m["id"] for m in client.get("/v1/models", headers=b).json()["items"]] == [theirs["model"]]
    listed = [d["id"] for d in client.get("/v1/datasets", headers=b).json()["items"]]
    assert [d for d in listed if not d.startswith("builtin:")] == [theirs["dataset"]]
    assert [j["id"] for j in client.get("/v1/jobs", headers=b).json()["items"]] == [theirs["job"]]
    assert [j["id"] for j in client.get("/ui/api/jobs", headers=b).json()["items"]] == [theirs["job"]]
    same_bytes = client.post(
        "/v1/models", files={"file": ("m.zip", saved_model_zip(KEY_A.encode()))}, headers=b
    )
    assert same_bytes.status_code == 201 and same_bytes.json()["id"] != mine["model"]
    # Deleting is refused across keys, so A still has everything.
    assert client.get(f"/v1/models/{mine['model']}", headers=_auth(KEY_A)).status_code == 200


def test_missing_malformed_or_unknown_key_is_401_on_every_v1_route(env_keys_api: Api) -> None:
    client = env_keys_api.client
    for headers in ({}, {"Authorization": KEY_A}, {"Authorization": "Basic eDp5"}, _auth("pk_not-a-key")):
        _assert_401(client.get("/v1/models", headers=headers))
        _assert_401(client.get("/v1/jobs/job_x", headers=headers))
        _assert_401(client.post("/v1/evaluations", json={}, headers=headers))
        _assert_401(client.post("/v1/models", files={"file": ("m.zip", saved_model_zip())}, headers=headers))
    assert not env_keys_api.enqueuer.sent
    assert env_keys_api.store.list_models("local") == []
    # Health and metrics stay open.
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    # The scheme is case-insensitive (RFC 7235).
    assert client.get("/v1/models", headers={"Authorization": f"bearer {KEY_A}"}).status_code == 200


def test_open_mode_without_any_key(tmp_path: Path) -> None:
    with make_api(tmp_path) as api:
        r = api.client.post("/v1/models", files={"file": ("m.zip", saved_model_zip())})
        assert r.status_code == 201
        assert api.store.get_model(r.json()["id"]).owner == "local"
        # A presented key is ignored while none exists: there is nothing to check it against.
        assert api.client.get("/v1/models", headers=_auth("anything")).status_code == 200
        assert api.client.get("/ui/api/jobs").status_code == 200


def test_first_key_created_while_running_closes_the_api_and_revoke_applies_at_once(tmp_path: Path) -> None:
    with make_api(tmp_path) as api:
        client = api.client
        assert client.get("/v1/models").status_code == 200
        key = "pk_made-by-parry-keys-create-000000"
        record = api.store.add_api_key(name="ci", key_sha256=hash_key(key))
        _assert_401(client.get("/v1/models"))
        assert client.get("/ui/api/jobs").status_code == 401  # the UI follows the same keys
        r = client.post("/v1/models", files={"file": ("m.zip", saved_model_zip())}, headers=_auth(key))
        assert r.status_code == 201
        assert api.store.get_model(r.json()["id"]).owner == record.id
        assert client.get("/ui/api/jobs", headers=_auth(key)).status_code == 200
        api.store.revoke_api_key(record.id)
        _assert_401(client.get("/v1/models", headers=_auth(key)))
        # Revoking the last key does not reopen the API.
        _assert_401(client.get("/v1/models"))


def test_keys_file_and_env_keys_give_stable_owners(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# operators\n{KEY_A}\n\n{KEY_B}  # bob\n")
    settings = Settings(data_dir=tmp_path / "d", api_keys_file=keys_file)
    store = JobStore(settings.resolved_database_url)
    store.create_schema()
    ring = KeyRing(settings, store)
    again = KeyRing(Settings(data_dir=tmp_path / "d", api_keys=SecretStr(KEY_B)), store)
    assert not ring.is_open()
    owner_a, owner_b = ring.owner_of(KEY_A), ring.owner_of(KEY_B)
    assert owner_a and owner_b and owner_a != owner_b
    assert again.owner_of(KEY_B) == owner_b  # the owner survives a restart with the key moved to the env
    assert ring.owner_of("pk_other") is None and ring.owner_of(KEY_A + " ") is None
    store.dispose()
    # The key itself never appears in the settings' repr (logs, tracebacks).
    assert KEY_A not in repr(Settings(api_keys=SecretStr(KEY_A)))


def test_keys_cli_create_list_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PARRY_DATABASE_URL", raising=False)
    from service.settings import get_settings

    get_settings.cache_clear()
    try:
        assert parry_main(["keys", "create", "--name", "ci"]) == 0
        key = capsys.readouterr().out.strip()
        assert key.startswith("pk_") and len(key) > 40
        assert parry_main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert "\tci\t" in listing and "active" in listing and key not in listing
        key_id = listing.split("\t", 1)[0]
        store = JobStore(get_settings().resolved_database_url)
        (record,) = store.list_api_keys()
        assert record.key_sha256 == hash_key(key) and record.id == key_id
        assert parry_main(["keys", "revoke", key_id]) == 0
        assert store.list_api_keys()[0].revoked
        assert parry_main(["keys", "revoke", "key_nope"]) == 2
        assert "no API key 'key_nope'" in capsys.readouterr().err
        store.dispose()
    finally:
        get_settings.cache_clear()


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.org", "", "127.0.0.1.nip.io"):
        assert not is_loopback(host), host


def test_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", redis_url="redis://127.0.0.1:1/0")
    assert open_bind_problem("127.0.0.1", settings) is None
    problem = open_bind_problem("0.0.0.0", settings)
    assert problem and "no API key" in problem
    for run in (serve, api):
        with pytest.raises(ServeError, match="refusing to listen on 0.0.0.0"):
            run("0.0.0.0", 8000, settings=settings)
    assert open_bind_problem("0.0.0.0", Settings(data_dir=tmp_path / "d", api_keys=SecretStr("k1"))) is None
    store = JobStore(settings.resolved_database_url)
    store.add_api_key(name="", key_sha256=hash_key("k2"))
    store.dispose()
    assert open_bind_problem("0.0.0.0", settings) is None
    missing = Settings(data_dir=tmp_path / "e", api_keys_file=tmp_path / "nope.txt")
    assert "cannot be read" in str(open_bind_problem("0.0.0.0", missing))


def _calls(dependant: Any) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def test_every_v1_and_ui_route_resolves_the_caller() -> None:
    """A route added later without the owner dependency would serve everyone's data: catch it here."""
    from fastapi.routing import APIRoute

    from service.api.deps import get_owner
    from service.api.routes import ROUTERS
    from service.api.ui.auth import ui_api_owner, ui_owner

    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    v1 = [r for r in routes if r.path.startswith("/v1")]
    assert len(v1) >= 14
    assert not [r.path for r in v1 if get_owner not in _calls(r.dependant)]
    public_ui = {"/ui/login", "/ui/logout", "/ui/static/{name}"}
    ui = [r for r in routes if r.path.startswith("/ui") and r.path not in public_ui]
    assert ui and not [r.path for r in ui if not _calls(r.dependant) & {ui_owner, ui_api_owner}]
