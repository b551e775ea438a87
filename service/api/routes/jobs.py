"""`/v1/jobs`: list, get, cancel, report and artifacts of the caller's jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, JobStoreDep, JobWatchDep, OwnerDep
from service.api.job_events import MAX_WAIT, SSE_HEADERS, event_stream, long_poll
from service.api.schemas import ArtifactOut, JobOut, JobPage, Problem
from service.api.ui.report import html_report
from service.domain.jobs import JobStatus
from service.errors import JobNotFinished, NotFound
from service.reports import PIPELINE_MEDIA_TYPES, pipeline_report

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobKindFilter = Literal["evaluation", "training", "hard_set"]
JobStatusFilter = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ReportFormat = Literal["json", "junit", "markdown", "html"]


@router.get("", response_model=JobPage)
def list_jobs(
    store: JobStoreDep,
    owner: OwnerDep,
    kind: JobKindFilter | None = None,
    status: JobStatusFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    """The caller's jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
    jobs, next_cursor = store.list_jobs(owner, kind=kind, status=status, limit=limit, cursor=cursor)
    return JobPage(items=[JobOut.of(j) for j in jobs], next_cursor=next_cursor)


WaitQuery = Annotated[
    float | None,
    Query(
        ge=0,
        le=MAX_WAIT,
        description="Long poll: answer as soon as the job's status changes, or after this many seconds.",
    ),
]


@router.get("/{job_id}", response_model=JobOut, responses={404: {"model": Problem}})
async def get_job(
    job_id: str, store: JobStoreDep, owner: OwnerDep, watch: JobWatchDep, wait: WaitQuery = None
) -> JobOut:
    """One job: status, progress, and the result once it has succeeded."""
    job = await run_in_threadpool(store.get_job, job_id, owner=owner)
    if wait:  # the wait holds no thread: it is an event the change feed sets
        job = await long_poll(watch, store, job, wait=wait)
    return JobOut.of(job)


EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `status`, `progress`, then `end`; the stream closes after `end`.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    404: {"model": Problem},
}


@router.get("/{job_id}/events", response_class=StreamingResponse, responses=EVENTS_RESPONSES)
async def job_events(
    job_id: str, store: JobStoreDep, owner: OwnerDep, watch: JobWatchDep
) -> StreamingResponse:
    """Live events of a job (Server-Sent Events): its status, its progress, and at the end its result link."""
    job = await run_in_threadpool(store.get_job, job_id, owner=owner)
    return StreamingResponse(
        event_stream(watch, store, job), media_type="text/event-stream", headers=SSE_HEADERS
    )


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={404: {"model": Problem}},
)
def cancel_job(job_id: str, store: JobStoreDep, owner: OwnerDep) -> JobOut:
    """Cancel a job: a queued one never starts, a running one stops at its next progress report."""
    return JobOut.of(store.request_cancel(job_id, owner=owner))


@router.get(
    "/{job_id}/report",
    response_model=None,
    responses={
        200: {"content": {"application/json": {}, "application/xml": {}, "text/markdown": {}}},
        404: {"model": Problem},
        409: {"model": Problem},
        422: {"model": Problem},
    },
)
def get_report(
    job_id: str, store: JobStoreDep, artifacts: ArtifactsDep, owner: OwnerDep, format: ReportFormat = "json"
) -> dict[str, Any] | Response:
    """The report of a succeeded job: the result (json), JUnit XML, a Markdown summary or an HTML page."""
    job = store.get_job(job_id, owner=owner)
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        if job.status == JobStatus.FAILED:
            detail = (job.error or {}).get("detail", "no reason was recorded")
            raise JobNotFinished(f"job {job_id} failed, so it has no report: {detail}")
        if job.status == JobStatus.CANCELLED:
            raise JobNotFinished(f"job {job_id} was cancelled, so it has no report")
        raise JobNotFinished(f"job {job_id} is {job.status}; its report is ready once it has succeeded")
    if format == "json":
        return job.result
    if format == "html":
        return html_report(job, store, artifacts)
    return Response(pipeline_report(job, format), media_type=PIPELINE_MEDIA_TYPES[format])


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut], responses={404: {"model": Problem}})
def list_artifacts(
    job_id: str, store: JobStoreDep, artifacts: ArtifactsDep, owner: OwnerDep
) -> list[ArtifactOut]:
    """The files a job wrote (reports, adversarial examples, trained models), as a list."""
    store.get_job(job_id, owner=owner)
    return [ArtifactOut.of(job_id, a) for a in artifacts.list_job_artifacts(job_id)]


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": Problem}},
)
def get_artifact(
    job_id: str, name: str, store: JobStoreDep, artifacts: ArtifactsDep, owner: OwnerDep
) -> FileResponse:
    """Download one artifact of a job."""
    store.get_job(job_id, owner=owner)
    path = artifacts.job_artifact_path(job_id, name)
    if not path.is_file():
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    media_type = "application/json" if name.endswith(".json") else "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=name)
