"""A surrogate's predictions on a hard set's pool: its class and its confidence for every sample.

Runs in the model's child process (`workers/sandbox/calls.py`), batched and compiled once per model. The
confidence is the largest softmax probability over `LoadedModel.logits`, whose softmax is the model's
own output for a model that emits probabilities, so both kinds of model are judged on the same scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from service.domain.datasets import ArrayDataset, in_input_range
from service.domain.results import Progress
from workers.evaluation import engine
from workers.evaluation.engine import EvaluationError
from workers.models.loading import LoadedModel

_RANGE_TOLERANCE = 1e-6


def predict_pool(
    model: LoadedModel,
    dataset: ArrayDataset,
    *,
    input_range: tuple[float, float],
    max_samples: int | None,
    batch_size: int,
    part: tuple[int, int] = (0, 1),
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class int64, confidence float32) per pool sample; raises EvaluationError on misfit.

    `part` is (this surrogate's index, number of surrogates): progress runs over the whole job, one
    surrogate after another.
    """
    # The pool as the new dataset keeps it too (workers/runners/hard_set.py takes the same samples).
    data = in_input_range(dataset.take(max_samples), input_range)
    x = engine._fit_shape(np.asarray(data.x, dtype=np.float32), model.input_shape)
    y = data.y
    if y.size and y.max() >= model.num_classes:
        raise EvaluationError(
            f"the labels range up to {y.max()} but the model has {model.num_classes} outputs "
            f"(classes 0 to {model.num_classes - 1})"
        )
    lo, hi = input_range
    tolerance = _RANGE_TOLERANCE * (hi - lo)
    if x.size and (float(x.min()) < lo - tolerance or float(x.max()) > hi + tolerance):
        raise EvaluationError(
            f"x has values in [{float(x.min()):g}, {float(x.max()):g}] outside input_range "
            f"[{lo:g}, {hi:g}]; set input_range to the model's input range"
        )
    x = np.clip(x, lo, hi)
    n = x.shape[0]
    index, count = part
    tracker = engine._Tracker(progress, should_stop)
    tracker.total, tracker.done = float(n * count), float(n * index)
    run = _predict_function(model)
    preds, confidences = [], []
    for start in range(0, n, batch_size):
        tracker.check()
        pred, confidence = run(x[start : start + batch_size])
        preds.append(pred.numpy())
        confidences.append(confidence.numpy())
        tracker.advance(min(batch_size, n - start), f"surrogate {index + 1} of {count}")
    return np.concatenate(preds).astype(np.int64), np.concatenate(confidences).astype(np.float32)


def _predict_function(model: LoadedModel) -> Callable[..., Any]:
    key = ("hard_set_predict",)
    if key in model.cache:
        return model.cache[key]  # type: ignore[no-any-return]
    signature = [tf.TensorSpec((None, *model.input_shape), tf.float32)]

    def graph(x: tf.Tensor) -> Any:
        z = tf.cast(model.logits(x), tf.float32)
        probabilities = tf.nn.softmax(z, axis=-1)
        return tf.argmax(z, axis=-1, output_type=tf.int64), tf.reduce_max(probabilities, axis=-1)

    run: Callable[..., Any] = tf.function(graph, input_signature=signature, autograph=False)
    model.cache[key] = run
    return run
