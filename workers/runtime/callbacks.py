"""POST a finished job to its `callback_url`, from its own task so a slow receiver never holds a job up."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from service.api.schemas import JobOut
from service.errors import NotFound
from service.store.jobs import JobStore
from service.store.records import JobRecord
from service.vetting.callback_urls import CallbackURLRefused, check_callback_url

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class CallbackFailed(Exception):
    """The receiver did not answer 2xx (or could not be reached); the task retries with backoff."""


def job_payload(job: JobRecord) -> dict[str, Any]:
    """The Job exactly as `GET /v1/jobs/{id}` shows it."""
    return JobOut.of(job).model_dump(mode="json")


def deliver(
    store: JobStore, job_id: str, *, client: httpx.Client | None = None, allow_private: bool = True
) -> bool:
    """POST the job JSON to its callback URL; raises `CallbackFailed` so Celery retries.

    False when there is nothing to send (no such job, no callback URL) or the URL is refused: it was
    checked at submission, but its host may resolve elsewhere now (DNS rebinding) or the setting changed.
    """
    try:
        job = store.get_job(job_id)
    except NotFound:
        log.warning("callback for job %s: the job no longer exists", job_id)
        return False
    url = job.spec.get("callback_url")
    if not url:
        return False
    try:
        check_callback_url(url, allow_private=allow_private)
    except CallbackURLRefused as exc:
        log.warning("callback for job %s not sent: %s", job_id, exc)
        return False
    try:
        with client or httpx.Client(timeout=TIMEOUT_S) as http:
            response = http.post(url, json=job_payload(job), headers={"User-Agent": "parry-callback"})
    except httpx.HTTPError as exc:
        log.info("callback for job %s to %s failed: %s", job_id, url, exc)
        raise CallbackFailed(f"could not reach {url}: {exc}") from exc
    if not response.is_success:
        log.info("callback for job %s to %s answered %d", job_id, url, response.status_code)
        raise CallbackFailed(f"{url} answered {response.status_code}")
    log.info("callback for job %s delivered to %s", job_id, url)
    return True
