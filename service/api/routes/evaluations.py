"""`POST /v1/evaluations`: check the request against the model and the dataset, queue a job, answer 202."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from service.api.deps import ArtifactsDep, EnqueuerDep, JobStoreDep, OwnerDep, SettingsDep
from service.api.queue import send_logged
from service.api.routes.datasets import resolve_dataset
from service.api.schemas import DatasetOut, JobOut, Problem
from service.domain import tasks as broker
from service.domain.builtins import UNLABELLED
from service.domain.datasets import range_error
from service.domain.limits import check_steps, evaluation_steps, forward_steps
from service.domain.reuse import evaluation_cache_key
from service.domain.specs import AttackSpec, EvaluationSpec
from service.errors import IncompatibleSpec, NotFound
from service.settings import Settings
from service.store.artifacts import ArtifactStore
from service.store.jobs import JobStore
from service.store.records import ModelRecord
from service.vetting.callback_urls import check_callback_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={404: {"model": Problem}, 422: {"model": Problem}},
)
def submit_evaluation(
    spec: EvaluationSpec,
    response: Response,
    store: JobStoreDep,
    artifacts: ArtifactsDep,
    enqueuer: EnqueuerDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: Annotated[str | None, Header(max_length=300)] = None,
) -> JobOut:
    """Queue an evaluation of a model against attacks on a dataset; poll the Job it answers.

    The same model bytes, data, attacks and seed as an earlier succeeded job answer a job that has
    already succeeded with that result (`reused_from` says which), unless `no_cache` is set.
    """
    first = store.job_by_idempotency_key(owner, idempotency_key) if idempotency_key is not None else None
    if first is not None:
        response.headers["Location"] = f"/v1/jobs/{first.id}"
        return JobOut.of(first)
    model, dataset, ood = check_evaluation(spec, store=store, owner=owner, settings=settings)
    cache_key = evaluation_cache_key(
        spec, model_sha256=model.sha256, model_output=model.output, dataset_sha256=dataset.sha256,
        ood_dataset_sha256=None if ood is None else ood.sha256,
    )  # fmt: skip
    source = None if spec.no_cache else store.reusable_job(owner, cache_key)
    job, created = store.create_job(
        owner=owner,
        kind="evaluation",
        spec=spec.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        cache_key=cache_key,
        reuse=source,
    )
    if created and source is None:
        send_logged(enqueuer, broker.RUN_EVALUATION, [job.id])
    elif created and source is not None:
        _copy_artifacts(artifacts, source.id, job.id)
        if spec.callback_url:
            send_logged(enqueuer, broker.DELIVER_CALLBACK, [job.id])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def _copy_artifacts(artifacts: ArtifactStore, source_id: str, job_id: str) -> None:
    # A reused job has the same files as the job that ran, so links to its artifacts work alike.
    for info in artifacts.list_job_artifacts(source_id):
        artifacts.write_job_artifact(job_id, info.name, artifacts.job_artifact_path(source_id, info.name))


def check_evaluation(
    spec: EvaluationSpec, *, store: JobStore, owner: str, settings: Settings
) -> tuple[ModelRecord, DatasetOut, DatasetOut | None]:
    """Refuse, with a sentence, what would certainly fail in the worker; the model, the dataset and the OOD
    dataset (None without `ood`) otherwise."""
    model = find_model(store, spec.model_id, owner=owner)
    dataset = find_dataset(store, spec.dataset_id, owner=owner)
    require_labels(spec.dataset_id, dataset, field="dataset_id")
    ood = None
    if spec.ood is not None:
        try:
            ood = find_dataset(store, spec.ood.dataset_id, owner=owner)
        except NotFound as exc:
            raise NotFound(f"ood {exc}") from exc
    if spec.callback_url:
        check_callback_url(spec.callback_url, allow_private=settings.callback_allow_private)
    if model.status == "rejected":
        raise IncompatibleSpec(f"model {model.id} was rejected: {model.rejection}")
    samples = dataset.num_samples if spec.max_samples is None else min(spec.max_samples, dataset.num_samples)
    if samples > settings.max_samples_per_job:
        raise IncompatibleSpec(
            f"this evaluation would attack {samples:,} samples, more than the limit of "
            f"{settings.max_samples_per_job:,} per job; set max_samples",
            errors=[{"loc": ["body", "max_samples"], "msg": f"at most {settings.max_samples_per_job}"}],
        )
    ood_samples = 0
    if spec.ood is not None and ood is not None:
        ood_samples = ood.num_samples if spec.max_samples is None else min(spec.max_samples, ood.num_samples)
        if ood_samples > settings.max_samples_per_job:
            raise IncompatibleSpec(
                f"this evaluation would score {ood_samples:,} OOD samples, more than the limit of "
                f"{settings.max_samples_per_job:,} per job; set max_samples",
                errors=[{"loc": ["body", "max_samples"], "msg": f"at most {settings.max_samples_per_job}"}],
            )
    check_steps(
        evaluation_steps(spec.attacks, samples, corruptions=spec.corruptions) + forward_steps(ood_samples),
        settings.max_gradient_steps_per_job,
        what="evaluation",
        hint="use fewer samples (max_samples), steps, restarts or eps values",
    )
    check_value_range(spec.dataset_id, dataset, spec.input_range)
    if spec.ood is not None and ood is not None:
        check_value_range(spec.ood.dataset_id, ood, spec.input_range)
        check_ood_shape(model, spec.dataset_id, dataset, spec.ood.dataset_id, ood)
    if model.status == "ready":
        check_fits(model, spec.dataset_id, dataset, spec.attacks)
    return model, dataset, ood


def require_labels(dataset_id: str, dataset: DatasetOut, *, field: str) -> None:
    """A dataset uploaded without `y` cannot be where labels are needed: a 422 that says what to do."""
    if not dataset.labelled or dataset.num_classes == 0:
        raise IncompatibleSpec(
            f"dataset {dataset_id} {UNLABELLED}",
            errors=[{"loc": ["body", field], "msg": "needs a dataset with labels (y)"}],
        )


def check_ood_shape(
    model: ModelRecord, dataset_id: str, dataset: DatasetOut, ood_id: str, ood: DatasetOut
) -> None:
    """The OOD samples go through the model as the evaluation's own do: the same shape check."""
    if model.status == "ready" and model.input_shape is not None:
        if _shapes_compatible(model.input_shape, ood.sample_shape):
            return
        wanted = f"model {model.id} takes inputs of shape {model.input_shape}"
    elif _shapes_compatible(dataset.sample_shape, ood.sample_shape):
        return
    else:
        wanted = f"dataset {dataset_id} has samples of shape {dataset.sample_shape}"
    raise IncompatibleSpec(
        f"OOD dataset {ood_id} has samples of shape {ood.sample_shape} but {wanted}; the OOD samples must "
        "have the shape of the evaluation's (resize them, for example 8x8 digits to 28x28)",
        errors=[{"loc": ["body", "ood", "dataset_id"], "msg": "sample shape differs"}],
    )


def check_value_range(dataset_id: str, dataset: DatasetOut, input_range: tuple[float, float]) -> None:
    """Values outside `input_range` can only be a mistake (the worker would refuse them): a 422 now.
    Built-ins come in any input_range; uploads of older releases have no recorded range."""
    if dataset.min_value is None or dataset.max_value is None:
        return
    problem = range_error(dataset.min_value, dataset.max_value, input_range)
    if problem is not None:
        raise IncompatibleSpec(
            f"dataset {dataset_id}: {problem}",
            errors=[{"loc": ["body", "input_range"], "msg": "does not contain the dataset's values"}],
        )


def find_model(store: JobStore, model_id: str, *, owner: str) -> ModelRecord:
    """The owner's model, or NotFound saying how to upload one."""
    try:
        return store.get_model(model_id, owner=owner)
    except NotFound as exc:
        raise NotFound(f"model {model_id!r} does not exist; upload it with POST /v1/models") from exc


def find_dataset(store: JobStore, dataset_id: str, *, owner: str) -> DatasetOut:
    """A built-in or the owner's uploaded dataset, or NotFound saying what exists."""
    try:
        return resolve_dataset(store, dataset_id, owner=owner)
    except NotFound as exc:
        raise NotFound(
            f"dataset {dataset_id!r} does not exist; upload one with POST /v1/datasets "
            "or use a built-in id such as builtin:mnist-5k:test"
        ) from exc


def check_fits(
    model: ModelRecord,
    dataset_id: str,
    dataset: DatasetOut,
    attacks: Sequence[AttackSpec],
    *,
    attacks_field: str = "attacks",
) -> None:
    """A validated model must take the dataset's samples, cover its labels and every attack's target class."""
    if model.input_shape is not None and not _shapes_compatible(model.input_shape, dataset.sample_shape):
        raise IncompatibleSpec(
            f"model {model.id} takes inputs of shape {model.input_shape} but dataset {dataset_id} "
            f"has samples of shape {dataset.sample_shape}"
        )
    if model.num_classes is not None:
        if dataset.num_classes > model.num_classes:
            raise IncompatibleSpec(
                f"dataset {dataset_id} has labels up to {dataset.num_classes - 1} but model {model.id} "
                f"has only {model.num_classes} classes"
            )
        for i, attack in enumerate(attacks):
            if attack.target is not None and attack.target >= model.num_classes:
                raise IncompatibleSpec(
                    f"attack {i} ({attack.name}) targets class {attack.target} but model {model.id} "
                    f"has only {model.num_classes} classes",
                    errors=[
                        {"loc": ["body", attacks_field, i, "target"], "msg": f"below {model.num_classes}"}
                    ],
                )


def _shapes_compatible(input_shape: Sequence[int | None], sample_shape: Sequence[int]) -> bool:
    """Same shape (unknown model dims match anything), or the same number of elements (a reshape)."""
    if len(input_shape) == len(sample_shape) and all(
        m is None or m <= 0 or m == s for m, s in zip(input_shape, sample_shape, strict=True)
    ):
        return True
    if any(m is None or m <= 0 for m in input_shape):
        return False
    return math.prod(d for d in input_shape if d is not None) == math.prod(sample_shape)
