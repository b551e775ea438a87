"""Accuracy under the common corruptions: which samples the model still gets right, per corruption.

The engine (workers/evaluation/engine.py) runs this on the clean samples after the attacks; a shard of a
sharded evaluation runs it on its own range of samples, and the merge puts the ranges together. Each
sample's corruption depends on its global index only (workers/natural/corruptions.py), so the shards
together compute exactly what one worker computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from service.domain.corruptions import CORRUPTION_NAMES
from service.domain.results import CorruptionItem, CorruptionsResult
from service.domain.specs import QUERIES_PER_GRADIENT_STEP, CorruptionsSpec, EvaluationOptions
from workers.models.loading import LoadedModel
from workers.natural.corruptions import CorruptionError, corrupt

# Progress counts gradient steps; a forward pass is about a third of one (specs.QUERIES_PER_GRADIENT_STEP).
UNITS_PER_FORWARD = 1.0 / QUERIES_PER_GRADIENT_STEP

Check = Callable[[], None]
Advance = Callable[[float, str], None]


class CorruptionSetupError(ValueError):
    """The spec's corruptions do not fit these images; the message is one sentence."""


@dataclass
class CorruptionRuns:
    """Per (name, severity) item, which samples stayed correct; only the rows of `span` were computed."""

    items: list[tuple[str, int]]
    correct: np.ndarray  # (len(items), num_samples) bool
    skipped: list[str]
    span: range
    forward: int  # forward passes made

    def arrays(self) -> dict[str, np.ndarray]:
        """What a shard saves (np.savez keys)."""
        return {
            "corrupt_correct": self.correct,
            "corrupt_span": np.array([self.span.start, self.span.stop], np.int64),
            "corrupt_forward": np.array(self.forward, np.int64),
            "corrupt_items": np.array([f"{name}:{severity}" for name, severity in self.items], np.str_),
            "corrupt_skipped": np.array(self.skipped, np.str_),
        }


def image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) of the dataset's samples: (H, W) is grayscale; raises CorruptionSetupError otherwise."""
    if len(sample_shape) == 2:
        return (sample_shape[0], sample_shape[1], 1)
    if len(sample_shape) == 3:
        return (sample_shape[0], sample_shape[1], sample_shape[2])
    raise CorruptionSetupError(
        f"corruptions need image samples of shape (H, W) or (H, W, C); these have shape {sample_shape}"
    )


def plan_items(spec: CorruptionsSpec, channels: int) -> tuple[list[tuple[str, int]], list[str]]:
    """The (name, severity) items to run on images of `channels` channels, and the names of `all` skipped."""
    names = spec.selected(channels=channels)
    if spec.names != "all" and channels != 3 and "saturate" in names:
        raise CorruptionSetupError(
            f"saturate needs colour images (3 channels) and these have {channels}; leave it out of names "
            "(all skips it for grayscale)"
        )
    skipped = [n for n in CORRUPTION_NAMES if spec.names == "all" and n not in names]
    return [(name, severity) for name in names for severity in spec.severities], skipped


def corruption_units(spec: CorruptionsSpec | None, samples: int) -> float:
    """Progress units of the corruptions on `samples` samples (every item, at most)."""
    return 0.0 if spec is None else samples * spec.most_items() * UNITS_PER_FORWARD


def run_corruptions(
    model: LoadedModel,
    images: np.ndarray,
    y: np.ndarray,
    options: EvaluationOptions,
    *,
    check: Check,
    advance: Advance,
    span: range | None = None,
) -> CorruptionRuns:
    """Corrupt the samples of `span` (default all) batch by batch, and score the model on each item.

    `images` are the clean samples as NHWC images; they are reshaped to the model's input for the
    forward passes.
    """
    spec = options.corruptions
    assert spec is not None
    n = images.shape[0]
    span = range(0, n) if span is None else span
    items, skipped = plan_items(spec, images.shape[-1])
    correct = np.zeros((len(items), n), bool)
    low, high = options.input_range
    predict = _predict_function(model)
    forward = 0
    for j, (name, severity) in enumerate(items):
        stage = f"{name} severity {severity}"
        for start in range(span.start, span.stop, options.batch_size):
            check()
            stop = min(start + options.batch_size, span.stop)
            try:
                batch = corrupt(
                    images[start:stop], name, severity, seed=options.seed, low=low, high=high,
                    first_index=start,
                )  # fmt: skip
            except CorruptionError as exc:
                raise CorruptionSetupError(str(exc)) from None
            batch = batch.reshape((stop - start, *model.input_shape))
            correct[j, start:stop] = predict(batch).numpy() == y[start:stop]
            forward += stop - start
            advance((stop - start) * UNITS_PER_FORWARD, stage)
    # Items skipped for these images still count in the expected work, as spec.most_items() does.
    advance((spec.most_items() - len(items)) * len(span) * UNITS_PER_FORWARD, "corruptions")
    return CorruptionRuns(items, correct, skipped, span, forward)


def _predict_function(model: LoadedModel) -> Callable[[np.ndarray], tf.Tensor]:
    key = ("predict",)
    if key not in model.cache:
        signature = [tf.TensorSpec((None, *model.input_shape), tf.float32)]

        def graph(x: tf.Tensor) -> tf.Tensor:
            return tf.argmax(model.logits(x), axis=-1, output_type=tf.int64)

        model.cache[key] = tf.function(graph, input_signature=signature, autograph=False)
    run: Callable[[np.ndarray], tf.Tensor] = model.cache[key]
    return run


def shard_span(batch_start: int, batch_stop: int, *, correct: int, batch_size: int, samples: int) -> range:
    """The samples whose corruptions a shard scores: the same batch indices, over every sample.

    Shards split the batches of the clean-correct samples; the last one also takes the samples past
    them, so the shards together cover every sample once.
    """
    last = batch_stop >= -(-correct // batch_size)
    start = min(batch_start * batch_size, samples)
    return range(start, samples if last else min(batch_stop * batch_size, samples))


def merged_runs(parts: Sequence[dict[str, np.ndarray]]) -> CorruptionRuns:
    """The whole evaluation's corruption runs from the shards' arrays, each shard's own rows."""
    items = [(text.rpartition(":")[0], int(text.rpartition(":")[2])) for text in parts[0]["corrupt_items"]]
    skipped = [str(name) for name in parts[0]["corrupt_skipped"]]
    correct = np.zeros_like(parts[0]["corrupt_correct"])
    forward = 0
    for part in parts:
        start, stop = (int(v) for v in part["corrupt_span"])
        correct[:, start:stop] = part["corrupt_correct"][:, start:stop]
        forward += int(part["corrupt_forward"])
    return CorruptionRuns(items, correct, skipped, range(0, correct.shape[1]), forward)


def corruptions_result(runs: CorruptionRuns, clean_accuracy: float) -> CorruptionsResult:
    """The report's figures: accuracy per item, their mean, and the error relative to the clean error."""
    accuracies = runs.correct.mean(axis=1) if runs.correct.shape[1] else np.zeros(len(runs.items))
    items = [
        CorruptionItem(name=name, severity=severity, accuracy=float(a))
        for (name, severity), a in zip(runs.items, accuracies, strict=True)
    ]
    mean = float(np.mean(accuracies)) if items else 0.0
    clean_error = 1.0 - clean_accuracy
    relative = (1.0 - mean) / clean_error if clean_error > 0 else None
    return CorruptionsResult(items=items, mean_accuracy=mean, relative_error=relative, skipped=runs.skipped)


def per_sample_arrays(runs: CorruptionRuns) -> dict[str, np.ndarray]:
    """per_sample.npz keys: each item's per-sample correctness and the items' names."""
    return {
        "corruption_correct": runs.correct,
        "corruption_items": np.array([f"{name}:{severity}" for name, severity in runs.items], dtype=np.str_),
    }
