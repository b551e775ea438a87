"""Model validation: load an uploaded model once, in a child process, and mark it ready or rejected.

One attempt decides: a model whose validation runs past `validation_time_limit_s`, goes silent, or kills
its process is rejected with a sentence, never handed to another worker. Only a worker lost for a reason of
its own (SIGKILL of the whole worker) leaves the model `validating` for the reconciler to send again, and
those attempts are counted per model.
"""

from __future__ import annotations

import logging

from service.domain.jobs import ErrorType
from service.domain.messages import without_server_paths
from service.domain.tasks import VALIDATE_MODEL
from service.errors import NotFound
from service.store.schema import DEFAULT_MAX_ATTEMPTS
from workers.context import WorkerContext, model_ref
from workers.runtime.heartbeat import Heartbeat
from workers.sandbox.protocol import ChildDied, ChildError, ChildStopped, ChildTimedOut

log = logging.getLogger(__name__)

MAX_VALIDATION_ATTEMPTS = DEFAULT_MAX_ATTEMPTS
# The validation's heartbeat keeps the model off the reconciler's list of lost validations; it beats at
# least three times within that list's cutoff, or a validation slower than the cutoff ran twice at once
# (seen with a 5 s cutoff: a second worker validated the same model while the first was loading it).
_TOUCH_EVERY_S = 15.0


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
    who = f"model {model_id} (sha256 {record.sha256})"
    if attempts > MAX_VALIDATION_ATTEMPTS:
        # Every earlier worker died loading it (a redelivered message is the only way to get here twice).
        return _reject(
            ctx, model_id, who,
            f"validating this model stopped the worker {attempts - 1} times (killed or crashed while loading "
            "it), so it is rejected instead of being tried again",
        )  # fmt: skip
    limit = ctx.settings.validation_time_limit_s
    heartbeat = Heartbeat(
        lambda _progress: ctx.store.touch_model_validation(model_id),
        time_limit_s=limit,
        renew_every_s=min(_TOUCH_EVERY_S, ctx.settings.requeue_queued_after_s / 3),
    )
    try:
        with (
            heartbeat,
            ctx.children.session(
                model_ref(ctx, record), heartbeat, what=f"validation of model {model_id}", silence_s=limit
            ) as session,
        ):
            found = session.call("validate", {})
    except ChildStopped:
        if heartbeat.stop_reason == "time_limit":
            return _reject(
                ctx, model_id, who,
                f"validating this model took longer than {limit:g} s (a serving function that never "
                "returns?), so it is rejected",
            )  # fmt: skip
        if heartbeat.stop_reason == "shutdown":
            ctx.send(VALIDATE_MODEL, model_id)
            log.info("%s: validation handed back to the queue (worker shutting down)", who)
            return None
        log.info("%s: deleted or settled elsewhere during its validation", who)
        return None
    except (ChildTimedOut, ChildDied) as exc:
        return _reject(ctx, model_id, who, f"{exc}, so the model is rejected")
    except ChildError as exc:
        if exc.kind == ErrorType.MODEL_LOAD_ERROR:
            return _reject(ctx, model_id, who, without_server_paths(str(exc)))
        log.error("%s: unexpected error while loading: %s", who, exc)
        return _reject(
            ctx, model_id, who, "the model could not be loaded because of an unexpected error in the worker"
        )
    if found.get("trainable") is False:
        log.info("%s: cannot be trained: %s", who, found.get("trainable_why"))
    ctx.store.set_model_ready(
        model_id,
        input_shape=[int(d) for d in found["input_shape"]],
        num_classes=int(found["num_classes"]),
        output=str(found["output"]),
        trainable=found.get("trainable"),
    )
    log.info(
        "%s: ready, %s, input %s, %d classes, %s",
        who, found["format"], tuple(found["input_shape"]), found["num_classes"], found["output"],
    )  # fmt: skip
    return "ready"


def _reject(ctx: WorkerContext, model_id: str, who: str, reason: str) -> str:
    log.warning("%s: rejected: %s", who, reason)
    ctx.store.set_model_rejected(model_id, reason=reason)
    return "rejected"
