"""Hostile uploads, table-driven: each gets the right 4xx, or a `rejected` model with a sentence from the
worker's own validation, and no file appears outside the data directory.

The API only sniffs and vets archives; models that need loading to be judged (a graph that reads files,
a .keras with a Lambda) go through `workers.runners.validation.validate_model`, the function the worker
task runs.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from service.store.artifacts import ArtifactStore
from tests.op_zoo import export_hostile, export_tf1, tf1_names
from tests.sandboxing import require_bwrap
from tests.unit.api_helpers import Api, make_api, npz_bytes
from workers.context import WorkerContext
from workers.runners import validation
from workers.sandbox.pool import ChildPool

GiB = 1024**3


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real SavedModels (zipped) whose serving function reads or writes a file."""
    root = tmp_path_factory.mktemp("hostile_saved_models")
    target = root / "target.txt"
    out = {}
    for op in ("ReadFile", "WriteFile"):
        folder = export_hostile(op, root / op, target=target)
        out[op] = _zip_dir(folder)
    return out


@pytest.fixture(scope="module")
def tf1_saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, Path]]:
    """TF1 SavedModels whose own loader ops would write (F1) or read (F2) a file the attacker chose."""
    root = tmp_path_factory.mktemp("tf1_saved_models")
    out = {}
    for index, name in enumerate(tf1_names()):
        target = root / f"target{index}" / "ckpt"
        target.parent.mkdir()
        out[name] = (_zip_dir(export_tf1(name, root / f"m{index}", target=target)), target)
    return out


@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import keras

    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(3)(keras.layers.Lambda(lambda t: t * 2.0)(x)))
    path = tmp_path_factory.mktemp("lambda") / "m.keras"
    model.save(path)
    return path.read_bytes()


def _zip_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"model/{path.relative_to(folder)}")
    return buf.getvalue()


def _zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


PB = b"\x08\x01"


def zip_slip() -> bytes:
    return _zip({"model/saved_model.pb": PB, "../../escaped.txt": b"pwned"})


def zip_absolute() -> bytes:
    return _zip({"model/saved_model.pb": PB, "/tmp/parry-absolute.txt": b"pwned"})


def tar_symlink_to_etc() -> bytes:
    return _tar([_file("model/saved_model.pb", PB), _link("model/variables", "/etc", tarfile.SYMTYPE)])


def tar_hardlink() -> bytes:
    return _tar([_file("model/saved_model.pb", PB), _link("model/passwd", "/etc/passwd", tarfile.LNKTYPE)])


def tar_device_file() -> bytes:
    info = tarfile.TarInfo("model/null")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return _tar([_file("model/saved_model.pb", PB), (info, None)])


def tar_sparse_bomb() -> bytes:
    """A tar whose one entry declares 10 GB: only its header is sent (how a sparse-file bomb looks)."""
    head = _tar([_file("model/saved_model.pb", PB)])
    info = tarfile.TarInfo("model/variables/variables.data-00000-of-00001")
    info.size = 10 * GiB
    return head[: -1024 * 2].rstrip(b"\0").ljust(1024, b"\0") + info.tobuf() + b"\0" * 4096


def zip_ratio_bomb() -> bytes:
    return _zip(
        {"model/saved_model.pb": PB, "model/zeros": bytes(64 * 1024 * 1024)}, compression=zipfile.ZIP_DEFLATED
    )


def zip_100k_entries() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/saved_model.pb", PB)
        for i in range(100_000):
            zf.writestr(zipfile.ZipInfo(f"model/assets/{i}"), b"")
    return buf.getvalue()


def truncated_zip() -> bytes:
    whole = _zip({"model/saved_model.pb": PB * 5000, "model/variables/variables.index": os.urandom(4096)})
    return whole[: len(whole) // 2]


def npz_object_array() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    return buf.getvalue()


def npz_nan() -> bytes:
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[1, 2, 3, 0] = np.nan
    return npz_bytes(x=x, y=np.array([0, 1, 2, 0]))


def npz_inf() -> bytes:
    return npz_bytes(x=np.full((2, 3), np.inf, np.float32), y=np.array([0, 1]))


def npz_float_labels() -> bytes:
    return npz_bytes(x=np.zeros((2, 3), np.float32), y=np.array([0.5, 1.0]))


def npz_negative_labels() -> bytes:
    return npz_bytes(x=np.zeros((2, 3), np.float32), y=np.array([0, -1]))


def npz_pickle_only() -> bytes:
    return b"\x80\x04\x95" + b"cos\nsystem\n(S'touch /tmp/parry-pickle'\ntR." + b"\0" * 32


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npz_huge_header() -> bytes:
    """F5: a header declaring a 10^6 x 10^6 float32 array (4 TB) over 64 bytes of data."""
    return _zip({"x.npy": _npy_header((10**6, 10**6)) + bytes(64), "y.npy": _npy(np.arange(3))})


def npz_short_data() -> bytes:
    return _zip({"x.npy": _npy_header((100, 4)) + bytes(40), "y.npy": _npy(np.arange(100))})


def npz_malformed_header() -> bytes:
    return _zip({"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4 }  \n", "y.npy": _npy(np.arange(3))})


def npz_object_header() -> bytes:
    return _zip({"x.npy": _npy_header((2,), "|O") + bytes(16), "y.npy": _npy(np.arange(2))})


def npz_zip_bomb() -> bytes:
    """F4: a deflated .npz that expands a thousand times (what pushed the API past 5 GB)."""
    x = _npy_header((64 * 1024 * 1024,), "|u1") + bytes(64 * 1024 * 1024)
    return _zip({"x.npy": x, "y.npy": _npy(np.arange(3))}, compression=zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class Case:
    name: str
    route: str
    payload: Callable[[], bytes]
    filename: str
    status: int
    words: str


CASES = [
    Case("zip slip", "/v1/models", zip_slip, "m.zip", 422, "escaped.txt"),
    Case("zip absolute path", "/v1/models", zip_absolute, "m.zip", 422, "parry-absolute.txt"),
    Case("tar symlink to /etc", "/v1/models", tar_symlink_to_etc, "m.tar", 422, "link"),
    Case("tar hardlink", "/v1/models", tar_hardlink, "m.tar", 422, "link"),
    Case("tar device file", "/v1/models", tar_device_file, "m.tar", 422, "model/null"),
    Case("10 GB sparse bomb", "/v1/models", tar_sparse_bomb, "m.tar", 422, "expand"),
    Case("zip ratio bomb", "/v1/models", zip_ratio_bomb, "m.zip", 422, "expand"),
    Case("100k-entry archive", "/v1/models", zip_100k_entries, "m.zip", 422, "entries"),
    Case("truncated zip", "/v1/models", truncated_zip, "m.zip", 422, ""),
    Case("npz with object array", "/v1/datasets", npz_object_array, "d.npz", 422, "object arrays"),
    Case("npz that is a pickle", "/v1/datasets", npz_pickle_only, "d.npz", 422, "not a readable .npz"),
    Case("NaN data", "/v1/datasets", npz_nan, "d.npz", 422, "NaN"),
    Case("Inf data", "/v1/datasets", npz_inf, "d.npz", 422, "infinite"),
    Case("non-integer labels", "/v1/datasets", npz_float_labels, "d.npz", 422, "integers"),
    Case("negative labels", "/v1/datasets", npz_negative_labels, "d.npz", 422, "non-negative"),
    Case("npz header of 4 TB", "/v1/datasets", npz_huge_header, "d.npz", 422, "4,000,000,000,000 bytes"),
    Case("npz data shorter than its header", "/v1/datasets", npz_short_data, "d.npz", 422, "holds 40 bytes"),
    Case("npz malformed header", "/v1/datasets", npz_malformed_header, "d.npz", 422, "malformed .npy header"),
    Case("npz object header", "/v1/datasets", npz_object_header, "d.npz", 422, "object arrays"),
    Case("npz zip bomb", "/v1/datasets", npz_zip_bomb, "d.npz", 422, "archive bomb"),
]


def _snapshot(root: Path, data_dir: Path) -> set[str]:
    """Every path under `root` (the test's temp folder) outside the data directory, plus a few fixed names."""
    seen = {str(p) for p in root.rglob("*") if data_dir not in p.parents and p != data_dir}
    seen |= {p for p in ("/tmp/parry-absolute.txt", "/tmp/parry-pickle", "/escaped.txt") if Path(p).exists()}
    return seen


def _validate(api: Api, model_id: str, sandbox: str = "auto") -> tuple[str, str | None]:
    """Run the worker's validation of an uploaded model, as the validate task does."""
    settings = api.settings.model_copy(update={"sandbox": sandbox})
    ctx = WorkerContext(
        settings=settings,
        store=api.store,
        artifacts=ArtifactStore(api.settings.data_dir),
        children=ChildPool(settings),
        worker="test",
        send=lambda _name, _id: None,
    )
    try:
        validation.validate_model(ctx, model_id)
    finally:
        ctx.children.close()
    record = api.store.get_model(model_id)
    return record.status, record.rejection


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_upload_is_refused_and_nothing_lands_outside(api: Api, tmp_path: Path, case: Case) -> None:
    data_dir = api.settings.data_dir
    before = _snapshot(tmp_path, data_dir)
    r = api.client.post(case.route, files={"file": (case.filename, case.payload())})
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert case.words in detail and "Traceback" not in detail
    assert not api.enqueuer.sent
    assert api.store.list_models("local") == [] and api.store.list_datasets("local") == []
    assert _snapshot(tmp_path, data_dir) == before
    leftovers = list((data_dir / "tmp").rglob("*")) if (data_dir / "tmp").exists() else []
    assert not [p for p in leftovers if p.is_file()], leftovers


@pytest.mark.parametrize("op", ["ReadFile", "WriteFile"])
def test_saved_model_that_touches_files_is_rejected_by_the_worker(
    api: Api, tmp_path: Path, saved_models: dict[str, bytes], op: str
) -> None:
    before = _snapshot(tmp_path, api.settings.data_dir)
    r = api.client.post("/v1/models", files={"file": ("m.zip", saved_models[op])})
    assert r.status_code == 201, r.text  # the API only sniffs; the worker judges the graph
    status, rejection = _validate(api, r.json()["id"])
    assert status == "rejected"
    assert rejection and f"operation {op} (file access)" in rejection
    assert api.client.get(f"/v1/models/{r.json()['id']}").json()["rejection"] == rejection
    assert _snapshot(tmp_path, api.settings.data_dir) == before


@pytest.mark.parametrize("sandbox", ["bwrap", "rlimits"])
@pytest.mark.parametrize("name", tf1_names())
def test_tf1_saved_model_is_rejected_without_running_its_loader_ops(
    api: Api, tmp_path: Path, tf1_saved_models: dict[str, tuple[bytes, Path]], name: str, sandbox: str
) -> None:
    # F1 and F2 hold in both sandbox modes: the graph checks refuse the model before any op of it runs.
    if sandbox == "bwrap":
        require_bwrap()
    payload, target = tf1_saved_models[name]
    targets_before = sorted(p.name for p in target.parent.iterdir())
    before = _snapshot(tmp_path, api.settings.data_dir)
    r = api.client.post("/v1/models", files={"file": ("m.zip", payload)})
    assert r.status_code == 201, r.text
    status, rejection = _validate(api, r.json()["id"], sandbox)
    assert status == "rejected"
    assert rejection and "re-export it with TensorFlow 2" in rejection
    assert sorted(p.name for p in target.parent.iterdir()) == targets_before
    assert _snapshot(tmp_path, api.settings.data_dir) == before


def test_keras_with_a_lambda_is_refused_at_upload_and_by_the_worker(
    api: Api, tmp_path: Path, lambda_keras: bytes
) -> None:
    before = _snapshot(tmp_path, api.settings.data_dir)
    r = api.client.post("/v1/models", files={"file": ("m.keras", lambda_keras)})
    assert r.status_code == 422 and "Lambda layer" in r.json()["detail"]
    # A record that got past the API (say, from an older server) is rejected by the worker all the same.
    blob = api.client.app.state.artifacts.put_file(_write(tmp_path / "k.keras", lambda_keras))  # type: ignore[attr-defined]
    record, _ = api.store.add_model(
        owner="local", name="m", sha256=blob.sha256, format="keras", size_bytes=blob.size_bytes, output="auto"
    )
    status, rejection = _validate(api, record.id)
    assert status == "rejected" and rejection and "Lambda layer" in rejection
    (tmp_path / "k.keras").unlink()
    assert _snapshot(tmp_path, api.settings.data_dir) == before


def test_archives_refused_by_the_api_are_refused_by_the_worker_too(api: Api, tmp_path: Path) -> None:
    """Defense in depth: the worker's extraction checks the same things if a bad archive reaches it."""
    before = _snapshot(tmp_path, api.settings.data_dir)
    artifacts = api.client.app.state.artifacts  # type: ignore[attr-defined]
    for payload in (zip_slip, tar_symlink_to_etc, tar_hardlink, tar_sparse_bomb, zip_ratio_bomb):
        blob = artifacts.put_file(_write(tmp_path / "a.bin", payload()))
        record, _ = api.store.add_model(
            owner="local",
            name="m",
            sha256=blob.sha256,
            format="saved_model",
            size_bytes=blob.size_bytes,
            output="auto",
        )
        status, rejection = _validate(api, record.id)
        assert status == "rejected" and rejection, payload.__name__
    (tmp_path / "a.bin").unlink()
    assert _snapshot(tmp_path, api.settings.data_dir) == before


def test_upload_over_the_size_limit_is_413(tmp_path: Path) -> None:
    with make_api(tmp_path, max_upload_bytes=1000) as api:
        r = api.client.post("/v1/datasets", files={"file": ("d.npz", b"\0" * 5000)})
        assert r.status_code == 413 and "limit of 1,000 bytes" in r.json()["detail"]
        assert not [p for p in (api.settings.data_dir / "tmp").rglob("*") if p.is_file()]


def test_dataset_that_does_not_fit_the_model_is_422(api: Api) -> None:
    from tests.unit.api_helpers import ready_model

    model_id = ready_model(api, input_shape=[8, 8, 1], num_classes=3)
    wrong_shape = npz_bytes(x=np.zeros((4, 5, 5, 1), np.float32), y=np.array([0, 1, 2, 0]))
    too_many_classes = npz_bytes(x=np.zeros((4, 8, 8, 1), np.float32), y=np.array([0, 1, 2, 7]))
    for data, words in ((wrong_shape, "shape"), (too_many_classes, "class")):
        dataset = api.client.post("/v1/datasets", files={"file": ("d.npz", data)}).json()["id"]
        spec = {"model_id": model_id, "dataset_id": dataset, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
        r = api.client.post("/v1/evaluations", json=spec)
        assert r.status_code == 422 and words in r.json()["detail"], r.text


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
