"""Shared pieces of the API tests: an app on a temporary data dir with SQLite and a recording enqueuer."""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` at import; the TestClient works the same with httpx.
    warnings.filterwarnings("ignore", message=".*install `httpx2`")
    from fastapi.testclient import TestClient

from service.api.main import create_app
from service.settings import Settings
from service.store.jobs import JobStore

# Nothing listens on port 1: the broker is "down" for every unit test.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@dataclass
class RecordingEnqueuer:
    """Keeps what the API would have sent to the broker."""

    sent: list[tuple[str, list[str]]] = field(default_factory=list)
    fail: bool = False

    def send(self, task_name: str, args: list[str]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((task_name, list(args)))


@dataclass
class Api:
    client: TestClient
    enqueuer: RecordingEnqueuer
    settings: Settings

    @property
    def store(self) -> JobStore:
        store: JobStore = self.client.app.state.store  # type: ignore[attr-defined]
        return store


@contextmanager
def make_api(tmp_path: Path, **overrides: object) -> Iterator[Api]:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite:///{tmp_path / 'data' / 'parry.db'}",
        "redis_url": DEAD_REDIS,
        **overrides,
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    enqueuer = RecordingEnqueuer()
    app = create_app(settings, enqueuer=enqueuer)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, enqueuer, settings)


def saved_model_zip(extra: bytes = b"") -> bytes:
    """A zip that looks like a SavedModel archive (the API only sniffs and vets; workers load)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/saved_model.pb", b"\x08\x01" + extra)
        zf.writestr("model/variables/variables.index", b"idx")
    return buf.getvalue()


def h5_file(tmp_path: Path) -> bytes:
    import h5py

    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.arange(4, dtype=np.float32))
    return path.read_bytes()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def upload_model(
    api: Api, data: bytes, filename: str = "model.zip", **fields: str
) -> tuple[int, dict[str, object]]:
    r = api.client.post("/v1/models", files={"file": (filename, data)}, data=fields)
    return r.status_code, r.json()


def ready_model(api: Api, *, input_shape: list[int], num_classes: int, extra: bytes = b"") -> str:
    status, body = upload_model(api, saved_model_zip(extra))
    assert status == 201, body
    model_id = str(body["id"])
    api.store.set_model_ready(model_id, input_shape=input_shape, num_classes=num_classes, output="logits")
    return model_id


def assert_problem(response: object, status: int) -> dict[str, object]:
    from httpx import Response

    assert isinstance(response, Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("/problems/")
    assert isinstance(body["detail"], str) and body["detail"]
    return dict(body)
