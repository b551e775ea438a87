"""What the HTTP API answers: Model, Dataset, Job, artifacts, pages and problems (docs/api.md).

Request bodies (EvaluationSpec and the attack specs) live in `service.schemas`; this module only
shapes answers, converting the store's records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.store.artifacts import ArtifactInfo
from service.store.records import DatasetRecord, JobRecord, ModelRecord


class ProblemItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An error answer, `application/problem+json` (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemItem] | None = None


class ModelOut(BaseModel):
    id: str
    name: str
    sha256: str
    format: str
    size_bytes: int
    status: str = Field(description="validating | ready | rejected")
    input_shape: list[int] | None
    num_classes: int | None
    output: str = Field(description="logits | probabilities (auto until validated)")
    rejection: str | None
    created_at: datetime
    trainable: bool | None = Field(
        default=None,
        description="Whether adversarial training can update the model's weights (null until validated).",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Reasons to distrust the model, e.g. a training that left it worse than its upload.",
    )

    @classmethod
    def of(cls, record: ModelRecord) -> ModelOut:
        return cls(
            id=record.id,
            name=record.name,
            sha256=record.sha256,
            format=record.format,
            size_bytes=record.size_bytes,
            status=record.status,
            input_shape=record.input_shape,
            num_classes=record.num_classes,
            output=record.output,
            rejection=record.rejection,
            created_at=record.created_at,
            trainable=record.trainable,
            warnings=list(record.warnings or []),
        )


class ModelList(BaseModel):
    items: list[ModelOut]


class DatasetOut(BaseModel):
    id: str
    name: str
    sha256: str
    num_samples: int
    sample_shape: list[int]
    num_classes: int
    size_bytes: int | None = None
    builtin: bool = False
    created_at: datetime | None = Field(description="null for built-in datasets")
    min_value: float | None = Field(
        default=None,
        description="The smallest value of x (null for built-ins, which come in the job's input_range).",
    )
    max_value: float | None = Field(default=None, description="The largest value of x (null for built-ins).")
    labelled: bool = Field(
        default=True,
        description="false for an upload of x only (num_classes 0): usable as an evaluation's OOD set only.",
    )

    @classmethod
    def of(cls, record: DatasetRecord) -> DatasetOut:
        return cls(
            id=record.id,
            name=record.name,
            sha256=record.sha256,
            num_samples=record.num_samples,
            sample_shape=record.sample_shape,
            num_classes=record.num_classes,
            size_bytes=record.size_bytes,
            created_at=record.created_at,
            min_value=record.min_value,
            max_value=record.max_value,
            labelled=record.num_classes > 0,
        )


class DatasetList(BaseModel):
    items: list[DatasetOut]


class JobLinks(BaseModel):
    self: str
    report: str
    artifacts: str


class JobOut(BaseModel):
    id: str
    kind: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    progress: dict[str, Any] | None
    spec: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks
    reused_from: str | None = Field(
        default=None,
        description="The earlier identical job whose result this one reused; null when this job ran.",
    )

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        base = f"/v1/jobs/{job.id}"
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            progress=job.progress,
            spec=job.spec,
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            links=JobLinks(self=base, report=f"{base}/report", artifacts=f"{base}/artifacts"),
            reused_from=job.reused_from,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ArtifactOut(BaseModel):
    name: str
    size_bytes: int
    sha256: str
    url: str

    @classmethod
    def of(cls, job_id: str, info: ArtifactInfo) -> ArtifactOut:
        return cls(
            name=info.name,
            size_bytes=info.size_bytes,
            sha256=info.sha256,
            url=f"/v1/jobs/{job_id}/artifacts/{info.name}",
        )


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
