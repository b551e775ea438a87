"""`POST /v1/trainings`: check the request against the model and the datasets, queue a job, answer 202."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from service.api.deps import EnqueuerDep, JobStoreDep, OwnerDep, SettingsDep
from service.api.queue import send_logged
from service.api.routes.evaluations import (
    check_fits,
    check_value_range,
    find_dataset,
    find_model,
    require_labels,
)
from service.api.schemas import JobOut, Problem
from service.domain import tasks as broker
from service.domain.limits import HELD_OUT_FRACTION, check_steps, training_steps
from service.domain.specs import TrainingSpec
from service.errors import IncompatibleSpec, NotFound
from service.settings import Settings
from service.store.jobs import JobStore
from service.store.records import ModelRecord
from service.vetting.callback_urls import check_callback_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/trainings", tags=["trainings"])

UNTRAINABLE = (
    "model {id} cannot be trained: it has no trainable variables (its weights are constants or frozen); "
    "upload a Keras model or a SavedModel exported with its variables (e.g. `model.export(path)`)"
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={404: {"model": Problem}, 422: {"model": Problem}},
)
def submit_training(
    spec: TrainingSpec,
    response: Response,
    store: JobStoreDep,
    enqueuer: EnqueuerDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=300)] = None,
) -> JobOut:
    """Queue an adversarial training of a model; the Job's result names the robustified model."""
    first = store.job_by_idempotency_key(owner, idempotency_key) if idempotency_key is not None else None
    if first is not None:
        response.headers["Location"] = f"/v1/jobs/{first.id}"
        return JobOut.of(first)
    model = check_training(spec, store=store, owner=owner, settings=settings)
    job, created = store.create_job(
        owner=owner, kind="training", spec=spec.model_dump(mode="json"), idempotency_key=idempotency_key
    )
    if created:
        log.info("job %s: training of model %s (%s) submitted", job.id, model.id, spec.method)
        send_logged(enqueuer, broker.RUN_TRAINING, [job.id])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def check_training(spec: TrainingSpec, *, store: JobStore, owner: str, settings: Settings) -> ModelRecord:
    """Refuse, with a sentence, what would certainly fail in the worker; the model otherwise."""
    model = find_model(store, spec.model_id, owner=owner)
    datasets = {"dataset_id": find_dataset(store, spec.dataset_id, owner=owner)}
    if spec.validation_dataset_id is not None:
        try:
            datasets["validation_dataset_id"] = find_dataset(store, spec.validation_dataset_id, owner=owner)
        except NotFound as exc:
            raise NotFound(f"validation {exc}") from exc
    if spec.callback_url:
        check_callback_url(spec.callback_url, allow_private=settings.callback_allow_private)
    if model.status == "rejected":
        raise IncompatibleSpec(f"model {model.id} was rejected: {model.rejection}")
    if model.trainable is False:
        raise IncompatibleSpec(
            UNTRAINABLE.format(id=model.id), errors=[{"loc": ["body", "model_id"], "msg": "not trainable"}]
        )
    for field, dataset in datasets.items():
        require_labels(getattr(spec, field), dataset, field=field)
        if dataset.num_samples > settings.max_samples_per_job:
            raise IncompatibleSpec(
                f"dataset {dataset.id} has {dataset.num_samples:,} samples, more than the limit of "
                f"{settings.max_samples_per_job:,} per job",
                errors=[{"loc": ["body", field], "msg": f"at most {settings.max_samples_per_job} samples"}],
            )
        check_value_range(getattr(spec, field), dataset, spec.input_range)
        if model.status == "ready":
            check_fits(model, getattr(spec, field), dataset, spec.evaluate, attacks_field="evaluate")
    train = datasets["dataset_id"].num_samples
    validation = datasets.get("validation_dataset_id")
    check_steps(
        training_steps(
            spec,
            train_samples=train,
            validation_samples=validation.num_samples if validation else round(train * HELD_OUT_FRACTION),
        ),
        settings.max_gradient_steps_per_job,
        what="training",
        hint="use fewer epochs, steps or samples",
    )
    return model
