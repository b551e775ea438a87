"""Targeted runs over the top-k classes: the sweep APGD-T and FAB-T share (Croce & Hein, 2020).

An untargeted question (is there an adversarial within eps?) asked through targeted runs: the classes of
highest clean logit other than the label are tried in turn, each a full run of the iterative attack on
the samples still robust, and each sample keeps its worst case. Success stays untargeted (any class but
the label), so to the engine, the ensemble and `Attack.__call__` a sweep looks like any untargeted attack:
its goal is the label and its objective, used to choose between runs, is the attack's untargeted loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from service.domain.specs import DEFAULT_TARGET_CLASSES
from workers.attacks.base import CompiledAttack, RunOutput, derive_seed
from workers.attacks.iterative import Extras, IterativeAttack
from workers.models.loading import LoadedModel


class TargetSweep(IterativeAttack):
    """An iterative attack run once per target class; `step_objective` reads `extra["target"]`.

    Subclasses set `n_target_classes` in their constructor (capped at the model's classes - 1 per call).
    Cost per sample and restart: one clean forward pass to rank the classes, then per target class the
    run's passes and its scoring pass.
    """

    n_target_classes: int = DEFAULT_TARGET_CLASSES

    def aux_signature(self) -> dict[str, tf.TensorSpec]:
        return {"target": tf.TensorSpec((None,), tf.int64)}

    @staticmethod
    def target_of(extra: Extras) -> tf.Tensor:
        target: tf.Tensor = extra["target"]
        return target

    @property
    def gradient_steps(self) -> int:
        return super().gradient_steps * self.n_target_classes

    def max_passes(self) -> tuple[int, int]:
        forward, backward = super().max_passes()  # one target class
        runs = self.n_target_classes
        return self.restarts + runs * forward, runs * backward

    def config(self) -> tuple[Any, ...]:
        return (*super().config(), self.n_target_classes)

    def _build(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        loop = self._loop(model, bounds)
        batch = tf.TensorSpec((None, *model.input_shape), tf.float32)
        labels = tf.TensorSpec((None,), tf.int64)
        runs = max(1, min(self.n_target_classes, model.num_classes - 1))

        def ranking(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            # The classes of highest clean logit, the label excluded (it may not be the top one).
            z = tf.cast(model.logits(x), tf.float32)
            own = tf.one_hot(y, tf.shape(z)[-1], on_value=True, off_value=False)
            z = tf.where(own, tf.fill(tf.shape(z), z.dtype.min), z)
            return tf.math.top_k(z, k=runs).indices

        rank_fn = tf.function(ranking, input_signature=[batch, labels], autograph=False)

        def run(
            x: np.ndarray,
            goal: np.ndarray,
            eps: np.float32,
            step_size: np.float32,
            seed: np.ndarray,
            check: Callable[[], None] | None = None,
        ) -> RunOutput:
            n = x.shape[0]
            order = rank_fn(x, goal).numpy().astype(np.int64)
            forward, backward = np.ones(n, np.int64), np.zeros(n, np.int64)  # the ranking pass
            x_adv, pred = x.copy(), np.zeros(n, np.int64)
            success, obj = np.zeros(n, bool), np.full(n, -np.inf, np.float32)
            active = np.arange(n)
            for rank in range(runs):
                if active.size == 0:
                    break
                if check is not None and rank > 0:
                    check()
                seed_r = derive_seed(*(int(s) for s in seed), rank)
                aux = {"target": order[active, rank]}
                out = loop.run(x[active], goal[active], eps, step_size, seed_r, aux, check)
                forward[active] += out[4]
                backward[active] += out[5]
                # Active samples have only failed so far: a success or a higher untargeted objective wins.
                better = out[2] | (out[3] > obj[active])
                chosen = active[better]
                kept: tuple[np.ndarray, ...] = (x_adv, pred, success, obj)
                for array, new in zip(kept, out[:4], strict=True):
                    array[chosen] = new[better]
                active = active[~success[active]]
            return x_adv, pred, success, obj, forward, backward

        return CompiledAttack(run, [rank_fn, *loop.graphs])
