"""Gather what a job's page shows (names, artifacts, example grid) and render it; used by the UI routes
and by `GET /v1/jobs/{id}/report?format=html`.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from service.api.ui.examples import load_example_grid
from service.api.ui.render import Names, PageInputs, render_job_page, standalone_csp
from service.domain.artifacts import EXAMPLES_ARTIFACT
from service.domain.jobs import JobStatus
from service.errors import NotFound
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from service.store.records import JobRecord


def page_inputs(job: JobRecord, store: JobStore, artifacts: ArtifactStore) -> PageInputs:
    """Everything `render_job_page` needs about one job, looked up with the job's own owner."""
    grid = None
    if job.status == JobStatus.SUCCEEDED and job.kind == "evaluation":
        grid = load_example_grid(artifacts.job_artifact_path(job.id, EXAMPLES_ARTIFACT))
    return PageInputs(
        job=job,
        names=job_names(job, store),
        artifacts=artifacts.list_job_artifacts(job.id),
        grid=grid,
    )


def job_names(job: JobRecord, store: JobStore, cache: dict[str, str] | None = None) -> Names:
    result = job.result if isinstance(job.result, dict) else {}
    return Names(
        model=_name(store, job.owner, job.spec.get("model_id"), cache),
        dataset=_name(store, job.owner, job.spec.get("dataset_id"), cache),
        validation_dataset=_name(store, job.owner, job.spec.get("validation_dataset_id"), cache),
        new_model=_name(store, job.owner, result.get("model_id"), cache),
    )


def html_report(job: JobRecord, store: JobStore, artifacts: ArtifactStore) -> HTMLResponse:
    """The standalone HTML report of a job (inline CSS, no script): the `format=html` report."""
    html = render_job_page(page_inputs(job, store, artifacts), standalone=True)
    return HTMLResponse(html, headers={"Content-Security-Policy": standalone_csp()})


def _name(store: JobStore, owner: str, ref: Any, cache: dict[str, str] | None) -> str | None:
    """`name (id)` of a model or dataset, the id alone when it is gone or built in, None without an id."""
    if not isinstance(ref, str) or not ref:
        return None
    if cache is not None and ref in cache:
        return cache[ref]
    label = ref
    try:
        if ref.startswith("mdl_"):
            label = f"{store.get_model(ref, owner=owner).name} ({ref})"
        elif ref.startswith("dst_"):
            label = f"{store.get_dataset(ref, owner=owner).name} ({ref})"
    except NotFound:
        label = f"{ref} (deleted)"
    if cache is not None:
        cache[ref] = label
    return label
