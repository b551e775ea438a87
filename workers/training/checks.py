"""What a training run measures besides its loss: the per-epoch PGD check, and `evaluate` before and after.

The per-epoch check (clean and PGD accuracy at the full eps on a fixed validation subset) feeds the
history, early stopping and the catastrophic-overfitting guard; `evaluate_attacks` runs the job's
`evaluate` attacks through the evaluation engine, as an evaluation job would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from service.domain.datasets import ArrayDataset
from service.domain.results import EvaluationResult
from service.domain.specs import EvaluationOptions, TrainingOptions
from workers.attacks import PGD
from workers.evaluation.engine import EvaluationCancelled, EvaluationError, evaluate
from workers.models.loading import LoadedModel
from workers.training.errors import TrainingCancelled, TrainingError
from workers.training.progress import ProgressTracker

_VALIDATION_BATCH = 500
_EVALUATION_BATCH = 256
# Seed-path tag of the per-epoch check, apart from every epoch index.
_VALIDATION_TAG = 0x7A11D


class EpochCheck:
    """Clean and PGD (`validation_steps`, random start) accuracy at the full training eps."""

    def __init__(self, model: LoadedModel, options: TrainingOptions) -> None:
        self.model, self.options = model, options
        self.attack = PGD(steps=options.validation_steps, norm=options.norm, random_start=True)
        self.bounds = (float(options.input_range[0]), float(options.input_range[1]))

    def run(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epoch: int,
        tracker: ProgressTracker,
        *,
        before_batch: Callable[[], None],
        stage: str | None = None,
    ) -> tuple[float, float]:
        """Clean and robust accuracy over `x`; `before_batch` may raise to stop (a cancel)."""
        predict = self._predict()
        clean = robust = 0
        for start in range(0, x.shape[0], _VALIDATION_BATCH):
            before_batch()
            xb, yb = x[start : start + _VALIDATION_BATCH], y[start : start + _VALIDATION_BATCH]
            correct = predict(xb).numpy() == yb
            clean += int(correct.sum())
            if correct.any():
                seed = (self.options.seed, _VALIDATION_TAG, epoch, start)
                out = self.attack(
                    self.model,
                    xb[correct],
                    yb[correct],
                    eps=self.options.eps,
                    seed=seed,
                    input_range=self.bounds,
                )
                robust += int((~out.success).sum())
            units = xb.shape[0] * (self.options.validation_steps + 1)
            tracker.advance(units, stage or f"validate epoch {epoch + 1}")
        n = max(x.shape[0], 1)
        return clean / n, robust / n

    def clean(self, x: np.ndarray, y: np.ndarray) -> float:
        """Clean accuracy over `x` alone: the cheap probe a divergence check takes within an epoch."""
        predict = self._predict()
        correct = sum(
            int((predict(x[i : i + _VALIDATION_BATCH]).numpy() == y[i : i + _VALIDATION_BATCH]).sum())
            for i in range(0, x.shape[0], _VALIDATION_BATCH)
        )
        return float(correct / max(int(x.shape[0]), 1))

    def _predict(self) -> Callable[[np.ndarray], tf.Tensor]:
        key = ("training-predict",)
        if key not in self.model.cache:
            spec = tf.TensorSpec((None, *self.model.input_shape), tf.float32)
            logits = self.model.logits

            def predict(x: tf.Tensor) -> tf.Tensor:
                return tf.argmax(logits(x), axis=-1, output_type=tf.int64)

            self.model.cache[key] = tf.function(predict, input_signature=[spec], autograph=False)
        return self.model.cache[key]  # type: ignore[no-any-return]


def evaluate_attacks(
    model: LoadedModel,
    options: TrainingOptions,
    data: ArrayDataset,
    tracker: ProgressTracker,
    units: float,
    stage: str,
    stop: Callable[[], bool],
) -> EvaluationResult:
    """The job's `evaluate` attacks on `data`, reported as `units` of the run's progress."""
    evaluation = EvaluationOptions(
        attacks=options.evaluate,
        input_range=options.input_range,
        batch_size=_EVALUATION_BATCH,
        seed=options.seed,
    )
    try:
        outcome = evaluate(
            model,
            data,
            evaluation,
            progress=lambda p: tracker.report(f"{stage}: {p.stage}", extra=p.fraction * units),
            should_stop=stop,
        )
    except EvaluationCancelled as exc:
        raise TrainingCancelled("the training was cancelled") from exc
    except EvaluationError as exc:
        raise TrainingError(f"The evaluation before or after training failed: {exc}.") from exc
    tracker.advance(units, stage, force=True)
    return outcome.result


def evaluation_units(options: TrainingOptions, n: int) -> float:
    """Progress units (forward+backward passes) of one `evaluate_attacks` over `n` samples."""
    steps = 0
    for spec in options.evaluate:
        per_eps = getattr(spec, "steps", 1) * getattr(spec, "restarts", 1)
        steps += spec.planned_steps() if spec.minimum_norm else per_eps * len(spec.eps_values())
    return float(n * (1 + steps)) if options.evaluate else 0.0
