"""`/ui`: the jobs page (live status), a page per job, the login form, and the pages' static files.

Every page reads through the caller's owner (`service.api.ui.auth`), so someone else's job is a 404 here
exactly as in the API. Pages carry a strict Content-Security-Policy: no inline script, no other origin.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, JobStoreDep, JobWatchDep
from service.api.job_events import SSE_HEADERS, event_stream
from service.api.ui.auth import (
    COOKIE,
    KeyResolver,
    UiApiOwnerDep,
    UiOwnerDep,
    check_origin,
    csrf_token,
    key_resolver,
    safe_next,
)
from service.api.ui.render import PAGE_HEADERS, STATIC_DIR, render_job_page, render_jobs_page, render_login
from service.api.ui.report import job_names, page_inputs
from service.errors import NotFound
from service.store.jobs import JobStore
from service.store.records import JobRecord

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)

ResolverDep = Annotated[KeyResolver | None, Depends(key_resolver)]

_STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
_LIST_LIMIT = 100
# A week; the key itself is the credential, so logging out (or revoking the key) ends the session.
_COOKIE_MAX_AGE = 7 * 24 * 3600


def _page(html: str, *, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


@router.get("", response_class=HTMLResponse)
def jobs_page(store: JobStoreDep, owner: UiOwnerDep, resolver: ResolverDep) -> HTMLResponse:
    """The caller's jobs with live status and progress."""
    return _page(render_jobs_page(_job_rows(store, owner), show_logout=resolver is not None))


@router.get("/api/jobs")
def jobs_json(store: JobStoreDep, owner: UiApiOwnerDep) -> dict[str, Any]:
    """What the jobs page polls: a compact view of the caller's newest jobs."""
    return {"items": _job_rows(store, owner)}


@router.get("/api/jobs/{job_id}")
def job_json(job_id: str, store: JobStoreDep, owner: UiApiOwnerDep) -> dict[str, Any]:
    """What a running job's page polls."""
    return _row(store.get_job(job_id, owner=owner), store, {})


@router.get("/api/jobs/{job_id}/events")
async def job_events(job_id: str, store: JobStoreDep, owner: UiApiOwnerDep, watch: JobWatchDep) -> Response:
    """A running job's page listens to this (the same events as `/v1/jobs/{id}/events`, with the cookie)."""
    job = await run_in_threadpool(store.get_job, job_id, owner=owner)
    return StreamingResponse(
        event_stream(watch, store, job), media_type="text/event-stream", headers=SSE_HEADERS
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    job_id: str,
    request: Request,
    store: JobStoreDep,
    artifacts: ArtifactsDep,
    owner: UiOwnerDep,
    resolver: ResolverDep,
) -> HTMLResponse:
    """One job: status while it runs (with a Cancel button), the full report once it has succeeded."""
    job = store.get_job(job_id, owner=owner)
    inputs = page_inputs(job, store, artifacts)
    html = render_job_page(
        inputs, standalone=False, show_logout=resolver is not None, csrf=csrf_token(request)
    )
    return _page(html)


@router.get("/jobs/{job_id}/artifacts/{name}", response_class=FileResponse)
def job_artifact(
    job_id: str, name: str, store: JobStoreDep, artifacts: ArtifactsDep, owner: UiOwnerDep
) -> FileResponse:
    """Download an artifact of the caller's job (the robustified model, the examples)."""
    store.get_job(job_id, owner=owner)
    path = artifacts.job_artifact_path(job_id, name)
    if not path.is_file():
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    media_type = "application/json" if name.endswith(".json") else "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=name)


@router.get("/login", response_class=HTMLResponse)
def login_form(resolver: ResolverDep, next: Annotated[str, Query(max_length=2000)] = "/ui") -> Response:
    """The login form (a redirect to the UI when the service runs without keys)."""
    if resolver is None:
        return RedirectResponse(safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    return _page(render_login(next_path=safe_next(next), error=None))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    resolver: ResolverDep,
    key: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui",
) -> Response:
    """Check the key and keep it in an HttpOnly cookie; a wrong key shows the form again (401)."""
    check_origin(request)
    target = safe_next(next)
    if resolver is None:
        return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    key = key.strip()
    if not key or resolver(key) is None:
        html = render_login(next_path=target, error="That API key is not valid.")
        return _page(html, status_code=status.HTTP_401_UNAUTHORIZED)
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        key,
        max_age=_COOKIE_MAX_AGE,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Forget the key cookie."""
    check_origin(request)
    response = RedirectResponse("/ui/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """The UI's stylesheet and script, written here and served from this package (no CDN)."""
    media_type = _STATIC.get(name)
    if media_type is None:
        raise NotFound(f"there is no static file {name!r}")
    return FileResponse(
        STATIC_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _job_rows(store: JobStore, owner: str) -> list[dict[str, Any]]:
    jobs, _ = store.list_jobs(owner, limit=_LIST_LIMIT)
    cache: dict[str, str] = {}
    return [_row(job, store, cache) for job in jobs]


def _row(job: JobRecord, store: JobStore, cache: dict[str, str]) -> dict[str, Any]:
    """A job as the jobs page shows it; plain JSON values, escaped by the template or set as text by JS."""
    names = job_names(job, store, cache)
    progress = job.progress if isinstance(job.progress, dict) else None
    fraction = progress.get("fraction") if progress else None
    percent = round(fraction * 100) if isinstance(fraction, int | float) else None
    return {
        "id": job.id,
        "url": f"/ui/jobs/{job.id}",
        "kind": job.kind,
        "status": job.status,
        "model": names.model or "—",
        "dataset": names.dataset or "—",
        "progress": progress,
        "percent": percent,
        "stage": str(progress.get("stage", "")) if progress else "",
        "error": (job.error or {}).get("detail") if isinstance(job.error, dict) else None,
        "created_at": job.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
