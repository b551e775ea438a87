"""The rows of the store as frozen dataclasses, and the vocabulary their columns use."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from service.domain.jobs import JobPhase, JobStatus

ModelStatus = Literal["validating", "ready", "rejected"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12)}"


@dataclass(frozen=True)
class ModelRecord:
    id: str
    owner: str
    name: str
    sha256: str
    format: str
    size_bytes: int
    status: str
    input_shape: list[int] | None
    num_classes: int | None
    output: str
    rejection: str | None
    created_at: datetime
    updated_at: datetime
    trainable: bool | None = None
    validation_attempts: int = 0
    warnings: list[str] | None = None


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    owner: str
    name: str
    sha256: str
    size_bytes: int
    num_samples: int
    sample_shape: list[int]
    num_classes: int
    created_at: datetime
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    kind: str
    status: JobStatus
    spec: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    attempts: int
    max_attempts: int
    worker: str | None
    lease_until: datetime | None
    cancel_requested: bool
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cache_key: str | None = None
    reused_from: str | None = None
    phase: JobPhase | None = None

    def __post_init__(self) -> None:
        # The columns hold plain strings; records carry the enums.
        object.__setattr__(self, "status", JobStatus(self.status))
        if self.phase is not None:
            object.__setattr__(self, "phase", JobPhase(self.phase))

    @property
    def terminal(self) -> bool:
        return self.status.terminal


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as stored: its id (the owner of what the key creates) and a hash, never the key."""

    id: str
    name: str
    key_sha256: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


R = TypeVar("R", ModelRecord, DatasetRecord, JobRecord, ApiKeyRecord)


def record_from_row(cls: type[R], row: Any) -> R:
    fields = cls.__dataclass_fields__
    return cls(**{k: v for k, v in row.items() if k in fields})
