"""`POST /v1/hard-sets`: check the pool and the surrogates, queue a `hard_set` job, answer 202."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from service.api.deps import EnqueuerDep, JobStoreDep, OwnerDep, SettingsDep
from service.api.queue import send_logged
from service.api.routes.evaluations import check_fits, check_value_range, find_dataset, find_model
from service.api.schemas import JobOut, Problem
from service.domain import tasks as broker
from service.domain.hard_sets import HardSetSpec
from service.domain.limits import check_steps, hard_set_passes
from service.errors import IncompatibleSpec
from service.settings import Settings
from service.store.jobs import JobStore
from service.store.records import ModelRecord
from service.vetting.callback_urls import check_callback_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/hard-sets", tags=["hard sets"])

HARD_SET_KIND = "hard_set"


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={404: {"model": Problem}, 422: {"model": Problem}},
)
def submit_hard_set(
    spec: HardSetSpec,
    response: Response,
    store: JobStoreDep,
    enqueuer: EnqueuerDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=300)] = None,
) -> JobOut:
    """Queue a hard set: the pool samples every surrogate misclassifies confidently, as a new dataset."""
    first = store.job_by_idempotency_key(owner, idempotency_key) if idempotency_key is not None else None
    if first is not None:
        response.headers["Location"] = f"/v1/jobs/{first.id}"
        return JobOut.of(first)
    check_hard_set(spec, store=store, owner=owner, settings=settings)
    job, created = store.create_job(
        owner=owner, kind=HARD_SET_KIND, spec=spec.model_dump(mode="json"), idempotency_key=idempotency_key
    )
    if created:
        log.info(
            "job %s: hard set of %s with %d surrogates submitted",
            job.id, spec.pool_dataset_id, len(spec.surrogate_model_ids),
        )  # fmt: skip
        send_logged(enqueuer, broker.RUN_HARD_SET, [job.id])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def check_hard_set(
    spec: HardSetSpec, *, store: JobStore, owner: str, settings: Settings
) -> list[ModelRecord]:
    """Refuse, with a sentence, what would certainly fail in the worker; the surrogates otherwise."""
    pool = find_dataset(store, spec.pool_dataset_id, owner=owner)
    models = [find_model(store, model_id, owner=owner) for model_id in spec.surrogate_model_ids]
    if spec.callback_url:
        check_callback_url(spec.callback_url, allow_private=settings.callback_allow_private)
    if pool.num_classes < 1:
        raise IncompatibleSpec(
            f"dataset {spec.pool_dataset_id} has no labels; a hard set keeps misclassified samples, so its "
            "pool needs labels (`y`)",
            errors=[{"loc": ["body", "pool_dataset_id"], "msg": "no labels"}],
        )
    samples = pool.num_samples if spec.max_samples is None else min(spec.max_samples, pool.num_samples)
    if samples > settings.max_samples_per_job:
        raise IncompatibleSpec(
            f"this hard set would look at {samples:,} samples, more than the limit of "
            f"{settings.max_samples_per_job:,} per job; set max_samples",
            errors=[{"loc": ["body", "max_samples"], "msg": f"at most {settings.max_samples_per_job}"}],
        )
    check_steps(
        hard_set_passes(samples, len(models)),
        settings.max_gradient_steps_per_job,
        what="hard set",
        hint="use fewer samples (max_samples) or surrogates",
        unit="forward passes",
    )
    check_value_range(spec.pool_dataset_id, pool, spec.input_range)
    for i, model in enumerate(models):
        if model.status == "rejected":
            raise IncompatibleSpec(
                f"surrogate model {model.id} was rejected: {model.rejection}",
                errors=[{"loc": ["body", "surrogate_model_ids", i], "msg": "rejected"}],
            )
        if model.status == "ready":
            check_fits(model, spec.pool_dataset_id, pool, [])
    return models
