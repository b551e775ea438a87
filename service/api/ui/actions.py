"""What the UI does besides showing: upload a model or a dataset, submit an evaluation with an attack
preset, cancel a job. Plain HTML forms (no script needed, every control labelled, so the keyboard does
everything), each carrying the visitor's CSRF token (`auth.csrf_token`) and checked for its origin.

Each action goes through the same code as its API route, so the rules and the sentences are the same; a
refused form is shown again with the sentence, and a done one redirects (303) to what it made.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, EnqueuerDep, JobStoreDep, SettingsDep
from service.api.routes.datasets import builtin_dataset, register_dataset
from service.api.routes.evaluations import submit_evaluation
from service.api.routes.models import OUTPUTS, register_model
from service.api.ui.auth import UiOwnerDep, check_form, csrf_token
from service.api.ui.presets import BY_KEY, PRESETS
from service.api.ui.render import PAGE_HEADERS, render_new_page
from service.api.uploads import Upload, receive_upload
from service.domain import builtins as builtin_info
from service.domain.specs import EvaluationSpec
from service.errors import ServiceError
from service.settings import Settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)

CSRF_FIELD = "csrf"


def _form_page(
    request: Request, store: JobStore, owner: str, *, error: str | None = None, notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:  # fmt: skip
    models = [m for m in store.list_models(owner) if m.status != "rejected"]
    datasets = [builtin_dataset(d) for d in builtin_info.BUILTIN_IDS]
    uploads = store.list_datasets(owner)
    context: dict[str, Any] = {
        "csrf": csrf_token(request),
        "models": models,
        "builtins": datasets,
        "uploads": uploads,
        "presets": PRESETS,
        "outputs": OUTPUTS,
        "error": error,
        "notice": notice,
        "show_logout": getattr(request.app.state, "key_resolver", None) is not None,
    }
    return HTMLResponse(render_new_page(context), status_code=status_code, headers=PAGE_HEADERS)


@router.get("/new", response_class=HTMLResponse)
def new_page(
    request: Request, store: JobStoreDep, owner: UiOwnerDep, added: Annotated[str, Query(max_length=200)] = ""
) -> HTMLResponse:
    """The forms: upload a model, upload a dataset, submit an evaluation."""
    return _form_page(request, store, owner, notice=f"Added {added}." if added else None)


@router.post("/models", response_class=HTMLResponse)
async def upload_model(
    request: Request,
    store: JobStoreDep,
    artifacts: ArtifactsDep,
    enqueuer: EnqueuerDep,
    settings: SettingsDep,
    owner: UiOwnerDep,
) -> Response:
    """The model upload form: the API's checks, then back to the forms with the new model selected."""
    try:
        upload = await _checked_upload(request, artifacts, settings)
        record, _ = await register_model(
            upload, store=store, artifacts=artifacts, enqueuer=enqueuer, settings=settings, owner=owner
        )
    except ServiceError as exc:
        return await run_in_threadpool(_refused, request, store, owner, exc)
    return _see(f"/ui/new?added={quote(f'model {record.name} ({record.id})')}")


async def _checked_upload(request: Request, artifacts: ArtifactStore, settings: Settings) -> Upload:
    """The form's upload on disk, once its CSRF token is checked; discarded again when the check fails."""
    upload = await receive_upload(request, artifacts, max_bytes=settings.max_upload_bytes)
    try:
        check_form(request, upload.fields.get(CSRF_FIELD))
    except BaseException:
        upload.discard()
        raise
    return upload


@router.post("/datasets", response_class=HTMLResponse)
async def upload_dataset(
    request: Request, store: JobStoreDep, artifacts: ArtifactsDep, settings: SettingsDep, owner: UiOwnerDep
) -> Response:
    """The dataset upload form."""
    try:
        upload = await _checked_upload(request, artifacts, settings)
        record, _ = await register_dataset(upload, store=store, artifacts=artifacts, owner=owner)
    except ServiceError as exc:
        return await run_in_threadpool(_refused, request, store, owner, exc)
    return _see(f"/ui/new?added={quote(f'dataset {record.name} ({record.id})')}")


@router.post("/evaluations", response_class=HTMLResponse)
def submit(
    request: Request,
    store: JobStoreDep,
    artifacts: ArtifactsDep,
    enqueuer: EnqueuerDep,
    settings: SettingsDep,
    owner: UiOwnerDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
    model_id: Annotated[str, Form(max_length=200)] = "",
    dataset_id: Annotated[str, Form(max_length=200)] = "",
    preset: Annotated[str, Form(max_length=50)] = "standard",
    input_low: Annotated[str, Form(max_length=50)] = "0",
    input_high: Annotated[str, Form(max_length=50)] = "1",
    max_samples: Annotated[str, Form(max_length=50)] = "",
) -> Response:
    """The evaluation form: a preset's attacks, scaled to the input range; then the new job's page."""
    check_form(request, csrf)
    try:
        spec = _spec(model_id, dataset_id, preset, input_low, input_high, max_samples)
        job = submit_evaluation(
            spec,
            response=Response(),
            store=store,
            artifacts=artifacts,
            enqueuer=enqueuer,
            settings=settings,
            owner=owner,
            idempotency_key=None,
        )
    except ServiceError as exc:
        return _refused(request, store, owner, exc)
    except ValueError as exc:
        return _form_page(request, store, owner, error=str(exc), status_code=422)
    return _see(f"/ui/jobs/{job.id}")


@router.post("/jobs/{job_id}/cancel")
def cancel(
    job_id: str,
    request: Request,
    store: JobStoreDep,
    owner: UiOwnerDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The job page's Cancel button."""
    check_form(request, csrf)
    store.request_cancel(job_id, owner=owner)
    return _see(f"/ui/jobs/{job_id}")


def _spec(
    model_id: str, dataset_id: str, preset: str, low: str, high: str, max_samples: str
) -> EvaluationSpec:
    """The form's fields as an EvaluationSpec; ValueError with a sentence for a field that is wrong."""
    chosen = BY_KEY.get(preset)
    if chosen is None:
        raise ValueError(f"choose one of the presets ({', '.join(BY_KEY)})")
    if not model_id or not dataset_id:
        raise ValueError("choose a model and a dataset (upload them above first)")
    try:
        lo, hi = float(low), float(high)
        samples = int(max_samples) if max_samples.strip() else None
    except ValueError:
        raise ValueError("the input range and the sample count must be numbers") from None
    body = {
        "model_id": model_id,
        "dataset_id": dataset_id,
        "attacks": chosen.scaled(hi - lo) if hi > lo else chosen.scaled(1.0),
        "input_range": [lo, hi],
        "max_samples": samples,
    }
    try:
        return EvaluationSpec.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None


def _refused(request: Request, store: JobStore, owner: str, exc: ServiceError) -> HTMLResponse:
    status_code = exc.status if 400 <= exc.status < 500 else 422
    return _form_page(request, store, owner, error=str(exc), status_code=status_code)


def _see(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=status.HTTP_303_SEE_OTHER)
