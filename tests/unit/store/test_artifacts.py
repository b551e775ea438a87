"""ArtifactStore: content addressing, dedup, streaming size limit, atomic job artifacts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.errors import NotFound, UploadTooLarge
from service.store.artifacts import ArtifactStore, ArtifactWriteFailed


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_put_file_is_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "data")
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello")
    blob = store.put_file(src)
    assert blob.sha256 == hashlib.sha256(b"hello").hexdigest() and blob.size_bytes == 5
    assert blob.path == store.blob_path(blob.sha256) and blob.path.read_bytes() == b"hello"
    assert src.exists()  # a file outside the store is copied, not moved
    again = store.put_file(src)
    assert again.path == blob.path
    assert len([p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]) == 1


def test_put_upload_streams_hashes_and_moves_into_place(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = bytes(range(256)) * 100
    blob = asyncio.run(store.put_upload(_chunks(data), max_bytes=len(data)))
    assert blob.sha256 == hashlib.sha256(data).hexdigest() and blob.path.read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []
    dup = asyncio.run(store.put_upload(_chunks(data), max_bytes=len(data)))
    assert dup.path == blob.path and list(store.tmp_dir.iterdir()) == []


def test_put_upload_over_the_limit_raises_and_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(UploadTooLarge, match="limit of 10 bytes"):
        asyncio.run(store.put_upload(_chunks(b"x" * 11), max_bytes=10))
    assert list(store.tmp_dir.iterdir()) == []
    assert [p for p in store.blobs_dir.rglob("*") if p.is_file()] == []


def test_blob_path_refuses_non_digests(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ValueError):
        store.blob_path("../../etc/passwd")


def test_job_artifacts_overwrite_and_list(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.write_job_artifact("job_1", "report.json", b"{}")
    info = store.write_job_artifact("job_1", "report.json", b'{"a": 1}')  # a rerun overwrites
    src = tmp_path / "model.keras"
    src.write_bytes(b"k" * 1000)
    store.write_job_artifact("job_1", "model.keras", src)
    listed = store.list_job_artifacts("job_1")
    assert [a.name for a in listed] == ["model.keras", "report.json"]
    assert listed[1] == info and info.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert listed[0].size_bytes == 1000
    assert store.job_artifact_path("job_1", "report.json").read_bytes() == b'{"a": 1}'
    assert store.list_job_artifacts("job_unknown") == []
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "a\\b"])
def test_job_artifact_names_cannot_escape(tmp_path: Path, name: str) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(NotFound):
        store.job_artifact_path("job_1", name)


def test_failed_write_keeps_the_previous_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.write_job_artifact("job_1", "x.bin", b"old")
    with pytest.raises(ArtifactWriteFailed, match="the artifact jobs/job_1/x.bin could not be written"):
        store.write_job_artifact("job_1", "x.bin", tmp_path / "missing")
    assert store.job_artifact_path("job_1", "x.bin").read_bytes() == b"old"
    assert list(store.tmp_dir.iterdir()) == []


def test_ping(tmp_path: Path) -> None:
    ArtifactStore(tmp_path).ping()
