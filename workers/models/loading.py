"""Load a SavedModel / .keras / .h5 as one differentiable callable that returns logits.

`load_model` recognises the format by content (uploads are stored under their sha256, without a
file name), hands it to `workers.saved_models` or `workers.keras_models`, and decides whether the
model emits logits or probabilities. Every failure becomes a `ModelLoadError` with one sentence a
user can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from service.vetting.archives import ArchiveError, detect_model_format
from workers.models import keras as keras_models
from workers.models import saved_model as saved_models
from workers.models.errors import ModelLoadError, describe_shape, first_sentence, fixed_input_shape

ModelFormat = Literal["saved_model", "keras", "h5"]
OutputKind = Literal["logits", "probabilities"]

_PROBE_SAMPLES = 8
_PROB_TOLERANCE = 1e-3
_LOG_FLOOR = 1e-30


@dataclass
class LoadedModel:
    """A model as the engine sees it.

    `logits` maps a float32 batch of shape (B, *input_shape) to (B, num_classes) logits and is
    differentiable with respect to its input. For a model that outputs probabilities it returns the
    logits under its softmax when that head can be stripped (Keras), else log-probabilities; softmax of
    either is the model's output, and losses never see a saturated softmax. `output` says what the
    model itself emits.
    """

    logits: Callable[[tf.Tensor], tf.Tensor]
    input_shape: tuple[int, ...]
    num_classes: int
    output: OutputKind
    format: ModelFormat
    sha256: str = ""
    keras_model: Any = None  # the keras.Model when there is one (training needs it)
    # Compiled attack functions and the like, cached on the model so a warm worker reuses them.
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)


def from_keras(model: Any, *, output: OutputKind = "logits", sha256: str = "") -> LoadedModel:
    """Wrap an in-memory Keras model whose output kind is known (tests, training)."""
    shape = tuple(int(d) for d in model.input_shape[1:])
    num_classes = int(model.output_shape[-1])

    def logits(x: tf.Tensor) -> tf.Tensor:
        out = model(x, training=False)
        return tf.math.log(tf.clip_by_value(out, 1e-30, 1.0)) if output == "probabilities" else out

    return LoadedModel(logits, shape, num_classes, output, "keras", sha256, keras_model=model)


def load_model(
    path: Path,
    *,
    output: Literal["auto", "logits", "probabilities"] = "auto",
    sha256: str = "",
    work_dir: Path | None = None,
    probe: np.ndarray | None = None,
) -> LoadedModel:
    """Load a SavedModel (folder, or zip/tar archive of one), a .keras file or an .h5 file.

    A Keras softmax head is stripped so `logits` returns the true logits; any other model that emits
    probabilities gets log-probabilities. The result's `output` says what the model itself emits.

    Args:
        path: the model file or SavedModel folder; its name and extension do not matter.
        output: what the model emits; "auto" runs a probe batch and calls rows in [0, 1] that sum
            to 1 probabilities, anything else logits (a Keras softmax head is always probabilities).
        sha256: recorded on the result (the artifact store's key); also names the extraction folder.
        work_dir: where a SavedModel archive is extracted (a folder named after its digest, reused
            when already complete); by default a temporary folder that lives as long as the model.
        probe: a few real input samples for the "auto" decision and the gradient check; seeded
            uniform noise in [0, 1] when not given.
    """
    path = Path(path)
    try:
        fmt = detect_model_format(path)
    except ArchiveError as exc:
        raise ModelLoadError(str(exc)) from exc
    stripped: Callable[[tf.Tensor], tf.Tensor] | None = None
    keras_model: Any = None
    keep_alive: Any = None
    if fmt == "saved_model":
        signature = saved_models.load_signature(path, sha256=sha256, work_dir=work_dir)
        raw, shape, keep_alive = signature.call, signature.input_shape, signature.keep_alive
    else:
        keras_model = keras_models.load_keras(path, ".keras" if fmt == "keras" else ".h5")
        shape = fixed_input_shape(tf.TensorShape(keras_model.inputs[0].shape))
        raw = keras_models.keras_call(keras_model)
        stripped = keras_models.logits_without_softmax(keras_model)

    x_probe = _probe_batch(shape, probe)
    out = _run(raw, x_probe)
    if out.ndim != 2:
        raise ModelLoadError(
            f"The model's output has shape {describe_shape((None, *out.shape[1:]))}; "
            "a classifier's output must be (batch, classes)."
        )
    num_classes = int(out.shape[1])
    if num_classes < 2:
        raise ModelLoadError(
            "The model has a single output unit; binary single-output models are not supported yet."
        )
    kind: OutputKind
    if output == "auto":
        kind = "probabilities" if stripped is not None or _looks_like_probabilities(out) else "logits"
    else:
        kind = output

    logits = _logits_fn(raw, kind, stripped, keep_alive)
    _check_gradient(logits, x_probe)
    return LoadedModel(logits, shape, num_classes, kind, fmt, sha256, keras_model=keras_model)


# Helpers shared with the format loaders


def _logits_fn(
    raw: Callable[[tf.Tensor], tf.Tensor],
    kind: OutputKind,
    stripped: Callable[[tf.Tensor], tf.Tensor] | None,
    keep_alive: Any,
) -> Callable[[tf.Tensor], tf.Tensor]:
    if kind == "logits":
        base = raw
    elif stripped is not None:
        base = stripped
    else:

        def base(x: tf.Tensor) -> tf.Tensor:
            return tf.math.log(tf.clip_by_value(raw(x), _LOG_FLOOR, 1.0))

    def logits(x: tf.Tensor) -> tf.Tensor:
        _ = keep_alive  # referenced so the SavedModel and its files outlive every caller
        return base(x)

    return logits


def _probe_batch(shape: tuple[int, ...], probe: np.ndarray | None) -> tf.Tensor:
    if probe is not None:
        x = np.asarray(probe, dtype=np.float32)[:_PROBE_SAMPLES]
        if tuple(x.shape[1:]) != shape or len(x) == 0:
            raise ModelLoadError(
                f"The samples have shape {describe_shape(x.shape[1:])} "
                f"but the model expects {describe_shape(shape)}."
            )
    else:
        x = np.random.default_rng(0).random((_PROBE_SAMPLES, *shape), dtype=np.float32)
    return tf.constant(x)


def _run(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> np.ndarray:
    try:
        return np.asarray(fn(x))
    except Exception as exc:
        raise ModelLoadError(f"The model failed on a probe batch: {first_sentence(exc)}") from exc


def _looks_like_probabilities(out: np.ndarray) -> bool:
    in_range = bool(np.all(out >= -1e-6) and np.all(out <= 1 + 1e-6))
    return in_range and bool(np.all(np.abs(out.sum(axis=1) - 1.0) <= _PROB_TOLERANCE))


def _check_gradient(logits: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> None:
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = logits(x)
        objective = tf.reduce_sum(out[:, 0]) - tf.reduce_sum(out[:, -1])
    try:
        grad = tape.gradient(objective, x)
    except Exception as exc:
        raise ModelLoadError(f"The model's gradient cannot be computed: {first_sentence(exc)}") from exc
    if grad is None:
        raise ModelLoadError("The model's output is not differentiable with respect to its input.")
