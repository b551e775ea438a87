"""POST/GET/DELETE /v1/models through the real app (SQLite, temp data dir, recording enqueuer)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.domain.tasks import VALIDATE_MODEL
from tests.unit.api_helpers import Api, assert_problem, h5_file, make_api, saved_model_zip, upload_model


def test_upload_saved_model_zip_then_same_bytes_give_the_same_model(api: Api) -> None:
    data = saved_model_zip()
    status, body = upload_model(api, data, "cnn.zip", output="logits")
    assert status == 201
    assert body["id"].startswith("mdl_") and body["name"] == "cnn"  # type: ignore[union-attr]
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size_bytes"] == len(data)
    assert (body["format"], body["status"], body["output"]) == ("saved_model", "validating", "logits")
    assert str(body["created_at"]).endswith("Z")
    assert api.enqueuer.sent == [(VALIDATE_MODEL, [body["id"]])]
    assert api.store.get_model(str(body["id"])).sha256 == body["sha256"]
    blob = api.settings.data_dir / "blobs" / str(body["sha256"])[:2] / str(body["sha256"])
    assert blob.read_bytes() == data
    again_status, again = upload_model(api, data, "renamed.zip")
    assert again_status == 200 and again["id"] == body["id"]
    assert len(api.enqueuer.sent) == 1  # nothing new to validate
    assert list((api.settings.data_dir / "tmp").iterdir()) == []


def test_upload_h5_and_tar_saved_model(api: Api, tmp_path: Path) -> None:
    status, body = upload_model(api, h5_file(tmp_path), "m.h5", name="mine")
    assert status == 201 and body["format"] == "h5" and body["name"] == "mine"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("saved_model.pb")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"\x08\x01"))
    status, body = upload_model(api, buf.getvalue(), "m.tar.gz")
    assert status == 201 and body["format"] == "saved_model" and body["name"] == "m"


def test_get_list_delete(api: Api) -> None:
    _, body = upload_model(api, saved_model_zip())
    model_id = str(body["id"])
    assert api.client.get(f"/v1/models/{model_id}").json()["id"] == model_id
    assert [m["id"] for m in api.client.get("/v1/models").json()["items"]] == [model_id]
    assert api.client.delete(f"/v1/models/{model_id}").status_code == 204
    problem = assert_problem(api.client.get(f"/v1/models/{model_id}"), 404)
    assert model_id in str(problem["detail"])
    assert_problem(api.client.delete(f"/v1/models/{model_id}"), 404)


def test_too_big_is_413_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with make_api(tmp_path, max_upload_bytes=1000) as api:
        problem = assert_problem(api.client.post("/v1/models", files={"file": ("m.h5", b"x" * 5000)}), 413)
        assert "1,000 bytes" in str(problem["detail"])
        assert list((api.settings.data_dir / "tmp").iterdir()) == []
        assert api.enqueuer.sent == []


def test_streamed_upload_over_the_limit_without_content_length_is_413(tmp_path: Path) -> None:
    with make_api(tmp_path, max_upload_bytes=1000) as api:
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.h5"\r\n\r\n'
            + b"x" * 50_000
            + b"\r\n--b--\r\n"
        )

        def chunks(body: bytes = body) -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        r = api.client.post(
            "/v1/models", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert_problem(r, 413)
        assert list((api.settings.data_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ({"../saved_model.pb": b"x"}, ".."),
        ({"/abs/saved_model.pb": b"x"}, "abs"),
        ({"a/saved_model.pb": b"x", "b/saved_model.pb": b"x"}, "several"),
        ({"readme.txt": b"x"}, "not"),
    ],
)
def test_bad_archives_are_422_with_a_sentence(api: Api, entries: dict[str, bytes], words: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    problem = assert_problem(api.client.post("/v1/models", files={"file": ("m.zip", buf.getvalue())}), 422)
    assert words in str(problem["detail"])
    assert api.client.get("/v1/models").json()["items"] == []
    assert api.enqueuer.sent == []
    assert [p for p in (api.settings.data_dir / "blobs").rglob("*") if p.is_file()] == []


def test_zip_bomb_is_422(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("saved_model.pb", b"\x08\x01")
        zf.writestr("variables/variables.data-00000-of-00001", b"\0" * 5_000_000)
    with make_api(tmp_path, max_archive_ratio=50.0) as api:
        problem = assert_problem(
            api.client.post("/v1/models", files={"file": ("m.zip", buf.getvalue())}), 422
        )
        assert "expand" in str(problem["detail"]).lower()


def test_garbage_and_bad_fields_are_422(api: Api) -> None:
    assert_problem(api.client.post("/v1/models", files={"file": ("m.bin", b"not a model at all")}), 422)
    problem = assert_problem(
        api.client.post(
            "/v1/models", files={"file": ("m.zip", saved_model_zip())}, data={"output": "softmax"}
        ),
        422,
    )
    assert "output" in str(problem["detail"]) and problem["errors"] == [
        {"loc": ["body", "output"], "msg": "must be one of auto, logits, probabilities"}
    ]
    problem = assert_problem(
        api.client.post("/v1/models", files={"other": ("m.zip", saved_model_zip())}), 422
    )
    assert "`file`" in str(problem["detail"])
    assert_problem(api.client.post("/v1/models", json={"file": "x"}), 422)
    assert_problem(api.client.post("/v1/models", files={"file": ("m.zip", b"")}), 422)


def test_broker_down_still_answers_201(api: Api) -> None:
    api.enqueuer.fail = True
    status, body = upload_model(api, saved_model_zip())
    assert status == 201 and body["status"] == "validating"
