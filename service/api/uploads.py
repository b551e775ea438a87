"""Streaming multipart uploads: the file part goes straight to disk while it is hashed and counted.

Starlette's form parsing would first spool the whole file to a temporary file and only then let us
look at it; a 4 GiB upload would then be written twice and the size limit applied only at the end.
Here the request body is parsed as it arrives: the file part is written once, to the artifact store's
temporary area, and an upload over the limit is refused as soon as it crosses it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import InvalidUpload, UploadTooLarge
from service.store.artifacts import ArtifactStore, Blob

log = logging.getLogger(__name__)

MAX_FIELD_BYTES = 64 * 1024
# The multipart envelope (boundaries, part headers, small fields) on top of the file itself.
_ENVELOPE_BYTES = 1024 * 1024


# OpenAPI description of a multipart body, since the routes read the stream themselves.
def multipart_openapi(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}, **fields},
                    }
                }
            },
        }
    }


@dataclass
class Upload:
    """A received multipart request: the file (a temp file under the artifact store) and the text fields."""

    file: Blob
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.file.path.unlink(missing_ok=True)


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    buffer: bytearray | None = None
    sink: IO[bytes] | None = None


class _Receiver:
    """Callbacks for python-multipart's streaming parser."""

    def __init__(self, *, file_field: str, path: Path, max_bytes: int) -> None:
        self.file_field = file_field
        self.path = path
        self.max_bytes = max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.seen_file = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._part = _Part()
        self._fh: IO[bytes] | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._part = _Part()

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        filename = options.get(b"filename")
        part = self._part
        part.name = name.decode("utf-8", "replace") if name is not None else None
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if part.name == self.file_field:
            if self.seen_file:
                raise InvalidUpload(f"send one `{self.file_field}` part, not several")
            self.seen_file = True
            self.filename = part.filename
            self._fh = self.path.open("wb")
            part.sink = self._fh
        elif part.filename is None and part.name is not None:
            part.buffer = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.sink is not None:
            self.size += end - start
            if self.size > self.max_bytes:
                raise UploadTooLarge(f"the upload is larger than the limit of {self.max_bytes:,} bytes")
            chunk = data[start:end]
            self.digest.update(chunk)
            part.sink.write(chunk)
        elif part.buffer is not None:
            part.buffer.extend(data[start:end])
            if len(part.buffer) > MAX_FIELD_BYTES:
                raise InvalidUpload(f"the form field {part.name!r} is longer than {MAX_FIELD_BYTES:,} bytes")

    def _part_end(self) -> None:
        part = self._part
        if part.sink is not None:
            part.sink.close()
            part.sink = None
        elif part.buffer is not None and part.name is not None:
            self.fields[part.name] = part.buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()


async def receive_upload(
    request: Request, artifacts: ArtifactStore, *, max_bytes: int, file_field: str = "file"
) -> Upload:
    """Parse a multipart/form-data body as it streams in; the caller stores or discards the file."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidUpload(
            f"send the upload as multipart/form-data with the file in the `{file_field}` field"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + _ENVELOPE_BYTES:
        log.info("upload to %s refused: Content-Length %s is over the limit", request.url.path, declared)
        raise UploadTooLarge(f"the upload is larger than the limit of {max_bytes:,} bytes")

    path = artifacts.temp_path(suffix=".upload")
    receiver = _Receiver(file_field=file_field, path=path, max_bytes=max_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        receiver.close()
        path.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            log.info("upload to %s refused: malformed multipart body (%s)", request.url.path, exc)
            raise InvalidUpload(f"the multipart body is malformed: {exc}") from exc
        if isinstance(exc, UploadTooLarge):
            log.info("upload to %s refused: over the limit of %d bytes", request.url.path, max_bytes)
        raise
    receiver.close()
    if not receiver.seen_file:
        path.unlink(missing_ok=True)
        raise InvalidUpload(f"the form has no `{file_field}` field; attach the file as `{file_field}`")
    if receiver.size == 0:
        path.unlink(missing_ok=True)
        raise InvalidUpload("the uploaded file is empty")
    blob = Blob(receiver.digest.hexdigest(), receiver.size, path)
    return Upload(file=blob, filename=receiver.filename, fields=receiver.fields)
