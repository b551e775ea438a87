"""ArtifactStore: content-addressed blobs (uploads) and named per-job artifacts on a local or shared disk.

Every write goes to a temporary file in the same file system and is moved into place with
`os.replace`, so a reader sees either nothing or the whole file, never half of it.
Imports neither FastAPI nor TensorFlow: the workers use it too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from service.errors import NotFound, UploadTooLarge

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_CHUNK = 1 << 20


class ArtifactWriteFailed(OSError):
    """A file of the store could not be written; the message names it relative to the data directory.

    Absolute paths go to the operator's log only: a job's error reaches its owner.
    """

    def __init__(self, relative: str, reason: str) -> None:
        super().__init__(f"the artifact {relative} could not be written: {reason}")
        self.relative = relative


@dataclass(frozen=True)
class Blob:
    sha256: str
    size_bytes: int
    path: Path


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    size_bytes: int
    sha256: str


class ArtifactStore:
    """Blobs at `root/blobs/<sha[:2]>/<sha>`, job artifacts at `root/jobs/<job_id>/<name>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.jobs_dir = self.root / "jobs"
        self.tmp_dir = self.root / "tmp"
        for directory in (self.blobs_dir, self.jobs_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def ping(self) -> None:
        """Raise OSError when the store cannot be written (disk gone, read-only, full)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="ping-")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(name)

    # ---- blobs -------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        return self.blobs_dir / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh path under root/tmp (same file system as the blobs, so a move is a rename)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=suffix)
        os.close(fd)
        return Path(name)

    def _failed(self, dest: Path, exc: OSError) -> ArtifactWriteFailed:
        try:
            relative = dest.relative_to(self.root).as_posix()
        except ValueError:
            relative = dest.name
        log.error("could not write %s: %s", dest, exc)
        return ArtifactWriteFailed(relative, exc.strerror or type(exc).__name__)

    def put_file(self, src: Path, *, sha256: str | None = None) -> Blob:
        """Store a finished file by its content; a file under root/tmp is moved, any other is copied.

        The same bytes are stored once: a second put of them leaves the first copy in place. A write
        that fails raises ArtifactWriteFailed.
        """
        try:
            return self._put_file(Path(src), sha256)
        except ArtifactWriteFailed:
            raise
        except OSError as exc:
            raise self._failed(self.blob_path(sha256) if sha256 else self.blobs_dir, exc) from exc

    def _put_file(self, src: Path, sha256: str | None) -> Blob:
        digest = sha256 or _file_sha256(src)
        size = src.stat().st_size
        dest = self.blob_path(digest)
        if dest.is_file():
            if self._is_ours(src):
                src.unlink(missing_ok=True)
            return Blob(digest, size, dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self._is_ours(src):
            os.replace(src, dest)
        else:
            staged = self.temp_path()
            try:
                shutil.copyfile(src, staged)
                os.replace(staged, dest)
            finally:
                staged.unlink(missing_ok=True)
        return Blob(digest, size, dest)

    async def put_upload(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Blob:
        """Stream chunks to a temp file while hashing, then store the blob; too big: UploadTooLarge."""
        staged = await self.receive(chunks, max_bytes=max_bytes)
        return self.put_file(staged.path, sha256=staged.sha256)

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Blob:
        """Stream chunks to a temp file under root/tmp while hashing; the caller stores or deletes it."""
        path = self.temp_path(suffix=".upload")
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadTooLarge(f"the upload is larger than the limit of {max_bytes:,} bytes")
                    digest.update(chunk)
                    fh.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Blob(digest.hexdigest(), size, path)

    def _is_ours(self, path: Path) -> bool:
        return path.resolve().parent == self.tmp_dir.resolve()

    # ---- job artifacts -----------------------------------------------------------------------

    def job_artifact_path(self, job_id: str, name: str) -> Path:
        """Where artifact `name` of the job lives; names are plain file names (no '/', no '..')."""
        if not _ARTIFACT_NAME.match(name) or ".." in name:
            raise NotFound(f"artifact {name!r} does not exist")
        if not _ARTIFACT_NAME.match(job_id):
            raise NotFound(f"job {job_id!r} does not exist")
        return self.jobs_dir / job_id / name

    def write_job_artifact(self, job_id: str, name: str, data: bytes | Path) -> ArtifactInfo:
        """Write (or overwrite, on a rerun) one artifact of a job atomically; ArtifactWriteFailed if not."""
        dest = self.job_artifact_path(job_id, name)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            staged = self.temp_path()
            try:
                if isinstance(data, bytes):
                    staged.write_bytes(data)
                else:
                    shutil.copyfile(data, staged)
                digest = _file_sha256(staged)
                os.replace(staged, dest)
            finally:
                staged.unlink(missing_ok=True)
            _write_sidecar(dest, digest)
            return ArtifactInfo(name, dest.stat().st_size, digest)
        except OSError as exc:
            raise self._failed(dest, exc) from exc

    def list_job_artifacts(self, job_id: str) -> list[ArtifactInfo]:
        directory = self.jobs_dir / job_id
        if not _ARTIFACT_NAME.match(job_id) or not directory.is_dir():
            return []
        infos = []
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            infos.append(ArtifactInfo(path.name, path.stat().st_size, _artifact_sha256(path)))
        return infos

    def delete_job_artifacts(self, job_id: str) -> None:
        if _ARTIFACT_NAME.match(job_id):
            shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)


def _sidecar(path: Path) -> Path:
    # A dot file beside the artifact keeps its digest, so listing does not rehash large files.
    return path.with_name(f".{path.name}.sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    side = _sidecar(path)
    # Unique per thread too: two API threads may list (and so rewrite) one job's sidecars at once.
    tmp = side.with_name(side.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(f"{digest} {path.stat().st_size} {path.stat().st_mtime_ns}\n")
    os.replace(tmp, side)


def _artifact_sha256(path: Path) -> str:
    try:
        digest, size, mtime = _sidecar(path).read_text().split()
        stat = path.stat()
        if int(size) == stat.st_size and int(mtime) == stat.st_mtime_ns:
            return digest
    except (OSError, ValueError):
        pass
    digest = _file_sha256(path)
    _write_sidecar(path, digest)
    return digest


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
