"""Projected Gradient Descent with random start, restarts and a choice of loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from service.domain.specs import PGDSpec
from workers.attacks.base import (
    Attack,
    CompiledAttack,
    Logits,
    Norm,
    ascent_direction,
    per_sample,
    project,
    random_start,
)
from workers.attacks.losses import LossName, is_success
from workers.models.loading import LoadedModel

# Steps unrolled into one graph. Between two such chunks the samples that already succeeded leave the
# batch; tracing time also grows with the unrolled length (about 0.1 s per step here).
CHUNK_STEPS = 10
State = tuple[tf.Tensor, tf.Tensor, tf.Tensor]


class PGD(Attack):
    """Projected Gradient Descent (Madry et al., 2018) in L-inf or L2.

    Each step moves `step_size` along the ascent direction and projects back into the eps ball and the
    input range. The first iterate at which a sample is misclassified (or hits its target) is kept even
    if later steps wander back: that costs no extra forward pass, since every step computes the logits.
    The steps run as graphs of CHUNK_STEPS unrolled steps; between chunks, samples that already succeeded
    leave the batch (their result cannot change any more), which is where an undefended model is cheap.

    Args:
        steps: gradient steps per restart.
        step_size: absolute step size; None means 2.5 * eps / steps.
        random_start: start from a uniform point of the eps ball instead of the clean input.
        restarts: independent random starts; each sample keeps its worst case.
        loss: "ce" (cross-entropy) or "cw" (logit margin).
        norm, targeted, target: as for every attack.
        early_stop: drop succeeded samples between chunks (same result, less work); off only to measure
            the full cost.
    """

    name = "pgd"

    def __init__(
        self,
        *,
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: LossName = "ce",
        norm: Norm = "linf",
        targeted: bool = False,
        target: int | None = None,
        early_stop: bool = True,
    ) -> None:
        super().__init__(norm=norm, targeted=targeted, target=target, loss=loss)
        self.steps, self.step_size, self.random_start = steps, step_size, random_start
        self.early_stop = early_stop
        # Without a random start every restart would repeat the first one exactly.
        self._restarts = restarts if random_start else 1

    @classmethod
    def from_spec(cls, spec: PGDSpec) -> PGD:
        return cls(
            steps=spec.steps,
            step_size=spec.step_size,
            random_start=spec.random_start,
            restarts=spec.restarts,
            loss=spec.loss,
            norm=spec.norm,
            targeted=spec.targeted,
            target=spec.target,
        )

    @property
    def gradient_steps(self) -> int:
        return self.steps

    @property
    def restarts(self) -> int:
        return self._restarts

    def step_size_for(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else 2.5 * eps / self.steps

    def config(self) -> tuple[Any, ...]:
        return (*super().config(), self.steps, self.random_start, self.early_stop)

    def perturb(
        self,
        logits: Logits,
        x: tf.Tensor,
        goal: tf.Tensor,
        *,
        eps: tf.Tensor,
        step_size: tf.Tensor,
        seed: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tf.Tensor:
        state = self._start(x, eps, seed, bounds)
        state = self._iterate(logits, x, goal, state, eps, step_size, bounds, self.steps)
        return self._select(x, state)

    def _start(self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]) -> State:
        """(current iterate, found a success, the first successful iterate)."""
        x_adv = x
        if self.random_start:
            x_adv = project(x + random_start(x, eps, self.norm, seed), x, eps, self.norm, *bounds)
        return x_adv, tf.zeros(tf.shape(x)[:1], tf.bool), x_adv

    def _iterate(
        self,
        logits: Logits,
        x: tf.Tensor,
        goal: tf.Tensor,
        state: State,
        eps: tf.Tensor,
        step_size: tf.Tensor,
        bounds: tuple[float, float],
        steps: int,
    ) -> State:
        x_adv, found, first_hit = state
        for _ in range(steps):  # unrolled into the graph: measured at the floor, unlike tf.while_loop
            z, grad = self.value_and_gradient(logits, x_adv, goal)
            hit = tf.logical_and(is_success(z, goal, targeted=self.targeted), tf.logical_not(found))
            first_hit = tf.where(per_sample(hit, x), x_adv, first_hit)
            found = tf.logical_or(found, hit)
            x_adv = project(x_adv + step_size * ascent_direction(grad, self.norm), x, eps, self.norm, *bounds)
        return x_adv, found, first_hit

    @staticmethod
    def _select(x: tf.Tensor, state: State) -> tf.Tensor:
        x_adv, found, first_hit = state
        return tf.where(per_sample(found, x), first_hit, x_adv)

    def _build(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        """Graphs for the random start, a chunk of steps (and a shorter last chunk), and the scoring."""
        chunks = [CHUNK_STEPS] * (self.steps // CHUNK_STEPS) + [self.steps % CHUNK_STEPS]
        chunks = [steps for steps in chunks if steps]
        batch = tf.TensorSpec((None, *model.input_shape), tf.float32)
        flags = tf.TensorSpec((None,), tf.bool)
        labels = tf.TensorSpec((None,), tf.int64)
        scalar = tf.TensorSpec((), tf.float32)

        def start(x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> State:
            return self._start(x, eps, seed, bounds)

        def chunk_graph(steps: int) -> Any:
            def chunk(
                x: tf.Tensor,
                goal: tf.Tensor,
                x_adv: tf.Tensor,
                found: tf.Tensor,
                first_hit: tf.Tensor,
                eps: tf.Tensor,
                step_size: tf.Tensor,
            ) -> State:
                state = (x_adv, found, first_hit)
                return self._iterate(model.logits, x, goal, state, eps, step_size, bounds, steps)

            signature = [batch, labels, batch, flags, batch, scalar, scalar]
            return tf.function(chunk, input_signature=signature, autograph=False)

        def finish(x: tf.Tensor, goal: tf.Tensor, x_adv: tf.Tensor, eps: tf.Tensor) -> Any:
            return self.score(model.logits, x, x_adv, goal, eps, bounds)

        seed_spec = tf.TensorSpec((2,), tf.int64)
        start_fn = tf.function(start, input_signature=[batch, scalar, seed_spec], autograph=False)
        chunk_fns = {steps: chunk_graph(steps) for steps in sorted(set(chunks))}
        finish_fn = tf.function(finish, input_signature=[batch, labels, batch, scalar], autograph=False)

        def run(
            x: np.ndarray,
            goal: np.ndarray,
            eps: np.float32,
            step_size: np.float32,
            seed: np.ndarray,
            check: Callable[[], None] | None = None,
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            chosen = np.empty_like(x)
            steps_done = np.zeros(x.shape[0], np.int64)
            active = np.arange(x.shape[0])
            x_now, goal_now = x, goal
            state = start_fn(x, eps, seed)
            for index, steps in enumerate(chunks):
                if index > 0:
                    if check is not None:
                        check()
                    if self.early_stop:
                        found = state[1].numpy()
                        if found.any():
                            chosen[active[found]] = state[2].numpy()[found]
                            keep = ~found
                            active, x_now, goal_now = active[keep], x_now[keep], goal_now[keep]
                            state = tuple(tf.boolean_mask(t, keep) for t in state)
                        if active.size == 0:
                            break
                state = chunk_fns[steps](x_now, goal_now, *state, eps, step_size)
                steps_done[active] += steps
            if active.size:
                chosen[active] = self._select(x_now, state).numpy()
            x_adv, pred, success, obj = (t.numpy() for t in finish_fn(x, goal, chosen, eps))
            return x_adv, pred, success, obj, steps_done

        return CompiledAttack(run, [start_fn, *chunk_fns.values(), finish_fn])
