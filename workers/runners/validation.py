"""Model validation: load an uploaded model once, in the worker, and mark it ready or rejected."""

from __future__ import annotations

import logging

from service.domain.messages import without_server_paths
from service.errors import NotFound
from service.store.schema import DEFAULT_MAX_ATTEMPTS
from workers.context import WorkerContext, cache_key, load_job_model
from workers.models.errors import ModelLoadError
from workers.models.loading import LoadedModel

log = logging.getLogger(__name__)

MAX_VALIDATION_ATTEMPTS = DEFAULT_MAX_ATTEMPTS


def validate_model(ctx: WorkerContext, model_id: str) -> str | None:
    """Load an uploaded model once and mark it ready (with its shapes) or rejected (with a sentence)."""
    try:
        record = ctx.store.get_model(model_id)
    except NotFound:
        log.warning("model %s: not in the store (deleted?); nothing to validate", model_id)
        return None
    if record.status != "validating":
        return record.status
    attempts = ctx.store.start_model_validation(model_id)
    if attempts is None:  # another worker settled it meanwhile
        return ctx.store.get_model(model_id).status
    if attempts > MAX_VALIDATION_ATTEMPTS:
        # Every earlier worker died loading it (a redelivered message is the only way to get here twice).
        reason = (
            f"validating this model stopped the worker {attempts - 1} times (killed or crashed while "
            "loading it), so it is rejected instead of being tried again"
        )
        log.warning("model %s (sha256 %s): rejected: %s", model_id, record.sha256, reason)
        ctx.store.set_model_rejected(model_id, reason=reason)
        return "rejected"
    try:
        model = load_job_model(ctx, record)
    except ModelLoadError as exc:
        log.info("model %s (sha256 %s): rejected: %s", model_id, record.sha256, exc)
        ctx.store.set_model_rejected(model_id, reason=without_server_paths(str(exc)))
        return "rejected"
    except Exception:
        log.exception("model %s (sha256 %s): unexpected error while loading", model_id, record.sha256)
        ctx.store.set_model_rejected(
            model_id, reason="the model could not be loaded because of an unexpected error in the worker"
        )
        return "rejected"
    ctx.store.set_model_ready(
        model_id,
        input_shape=list(model.input_shape),
        num_classes=model.num_classes,
        output=model.output,
        trainable=_trainable(model, model_id),
    )
    # Jobs look the model up by the output kind found here, so the first job on it starts warm.
    ctx.models.put(cache_key(record.sha256, model.output), model)
    log.info(
        "model %s (sha256 %s): ready, %s, input %s, %d classes, %s",
        model_id, record.sha256, model.format, model.input_shape, model.num_classes, model.output,
    )  # fmt: skip
    return "ready"


def _trainable(model: LoadedModel, model_id: str) -> bool | None:
    """Whether adversarial training could update the model (POST /v1/trainings refuses it at once if not)."""
    from workers.training import TrainingError, trainable_variables  # the training engine, only here

    try:
        trainable_variables(model)
    except TrainingError as exc:
        log.info("model %s: cannot be trained: %s", model_id, exc)
        return False
    except Exception:  # unknown: leave it to the training job, which says why in a sentence
        log.warning("model %s: could not tell whether it is trainable", model_id, exc_info=True)
        return None
    return True
