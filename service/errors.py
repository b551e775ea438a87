"""Errors a request can run into, each one an HTTP problem (RFC 9457) with one sentence as its detail.

This module imports neither FastAPI nor TensorFlow, so the workers raise and catch the same errors
(`NotFound` from the store, for instance). The handlers that turn them into responses live in
`service.problems`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the API answers with a problem; `str(exc)` is the problem's detail."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors


class NotFound(ServiceError):
    status, title = 404, "Not found"


class Conflict(ServiceError):
    status, title = 409, "Conflict"


class JobNotFinished(Conflict):
    title = "Job has not succeeded"


class UploadTooLarge(ServiceError):
    status, title = 413, "Upload too large"


class Unprocessable(ServiceError):
    status, title = 422, "Unprocessable request"


class InvalidUpload(Unprocessable):
    title = "Invalid upload"


class IncompatibleSpec(Unprocessable):
    title = "Incompatible evaluation"


class InvalidCursor(Unprocessable):
    title = "Invalid cursor"


class FormatNotAvailable(Unprocessable):
    title = "Report format not available"


class NotReady(ServiceError):
    status, title = 503, "Service not ready"
