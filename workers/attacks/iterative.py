"""The iterative-attack base: a chunked compiled loop with early exit, best-point keeping and cost counts.

A subclass writes one step (where the next iterate goes, before projection) and, if it carries variables
of its own between steps (APGD's step sizes and momentum), their initial values and shapes. The loop runs
as `tf.function` graphs of CHUNK_STEPS unrolled steps (measured here at the cost floor, unlike
`tf.while_loop` or XLA; DESIGN.md); between chunks the samples that already succeeded leave the batch,
since their result cannot change any more. Eps, the step size, the seed and the index of a chunk's first
step are tensors and the batch dimension is None, so nothing retraces across eps values, seeds, chunks of
the same length, or short batches.

The same loop serves a gradient-free attack (`uses_gradient = False`: each step is one forward pass and
the step proposes the next candidate, as Square does), a minimum-norm attack whose iterates may leave the
eps ball (`iterates_in_ball = False`: only an adversarial inside the ball counts, as for FAB), attacks
whose step objective needs per-sample inputs beyond the label (`aux_signature`, e.g. a target class) and
gradients averaged over random draws of a stochastic model (`eot_iter`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from workers.attacks.base import Attack, CompiledAttack, Logits, RunOutput
from workers.attacks.losses import LossName, is_success
from workers.attacks.norms import Norm, per_sample
from workers.models.loading import LoadedModel

# Gradient evaluations unrolled into one graph. Between two such chunks the samples that already succeeded
# leave the batch; tracing time also grows with the unrolled length (about 0.1 s per step here).
CHUNK_STEPS = 10

Extras = dict[str, tf.Tensor]
# The loop's own per-sample variables, carried from chunk to chunk (all batch-first, so early exit can
# drop rows): the current iterate, whether and where the first success happened, the best point so far.
_CORE = ("x_adv", "found", "first_hit", "best_x", "best_objective")


@dataclass(frozen=True)
class IterState:
    """What one step sees: the iterate just evaluated, its objective and gradient, and the best so far.

    `index` is the step's number within the run (0 for the start point), a scalar int32 tensor;
    `step_size` is the scalar the attack asked for with `step_size_for(eps)`; `bounds` is the input
    range; `seed` is the run's stateless seed (fold `index` into it for a step's own draws). `improved`
    says which samples set a new best objective at this iterate (then `best_x` is `x_adv`). `extra` holds
    the attack's own variables (`initial_extra`) and its per-sample inputs (`aux_signature`).
    """

    x: tf.Tensor
    goal: tf.Tensor
    eps: tf.Tensor
    step_size: tf.Tensor
    index: tf.Tensor
    x_adv: tf.Tensor
    logits: tf.Tensor
    objective: tf.Tensor
    best_x: tf.Tensor
    best_objective: tf.Tensor
    improved: tf.Tensor
    bounds: tuple[float, float]
    seed: tf.Tensor
    extra: Extras = field(default_factory=dict)


class IterativeAttack(Attack):
    """The base of gradient attacks that iterate: random start, steps, restarts, best point, early exit.

    Each step evaluates the model and its gradient at the current iterate (one forward and one backward
    pass per sample and draw), records the first iterate that succeeds and the iterate of highest
    objective, then asks `step` (or `advance`) for the next iterate and projects it into the eps ball and
    the input range. A sample that succeeded returns its first successful iterate; one that never did
    returns its best iterate (`returns_last_iterate` makes it the last one instead, as Madry et al.'s PGD
    does).

    Args:
        steps: evaluations of the model per restart (gradient evaluations, or queries when gradient-free).
        random_start: start from a uniform point of the eps ball instead of the clean input.
        restarts: independent random starts; each sample keeps its worst case.
        loss: "ce", "cw" or "dlr" (see losses.py).
        norm, targeted, target: as for every attack.
        early_stop: drop succeeded samples between chunks (same result, less work); off only to measure
            the full cost.
        eot_iter: Expectation over Transformation: each step averages the gradient over this many
            forward+backward draws (for stochastic models; 1 for deterministic ones).
    """

    returns_last_iterate: ClassVar[bool] = False
    # False: a step is one forward pass and `advance` gets no gradient (score-based black-box attacks).
    uses_gradient: ClassVar[bool] = True
    # False: iterates stay in the input range only, and a success counts once it is inside the eps ball.
    iterates_in_ball: ClassVar[bool] = True

    def __init__(
        self,
        *,
        steps: int,
        random_start: bool = True,
        restarts: int = 1,
        loss: LossName = "ce",
        norm: str | Norm = "linf",
        targeted: bool = False,
        target: int | None = None,
        early_stop: bool = True,
        eot_iter: int = 1,
    ) -> None:
        super().__init__(norm=norm, targeted=targeted, target=target, loss=loss)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, not {steps}")
        if eot_iter < 1 or (eot_iter > 1 and not self.uses_gradient):
            raise ValueError(f"eot_iter must be at least 1 (and 1 without gradients), not {eot_iter}")
        self.steps, self.random_start, self.early_stop = steps, random_start, early_stop
        self.eot_iter = eot_iter
        # Without a random start every restart would repeat the first one exactly.
        self._restarts = restarts if random_start else 1

    # --- what a subclass provides -------------------------------------------------------------------
    def step(self, state: IterState, grad: tf.Tensor) -> tf.Tensor:
        """Graph code: the next iterate before projection (the base projects it)."""
        raise NotImplementedError(f"{type(self).__name__} must define step or advance")

    def advance(self, state: IterState, grad: tf.Tensor | None) -> tuple[tf.Tensor, Extras]:
        """The next iterate (before projection) and the attack's updated variables; default: `step`.

        `grad` is None when the attack does not use gradients.
        """
        if grad is None:
            raise NotImplementedError(f"{type(self).__name__} uses no gradient and must define advance")
        return self.step(state, grad), state.extra

    def extra_signature(self, input_shape: tuple[int, ...]) -> dict[str, tf.TensorSpec]:
        """Shapes of the attack's own per-sample variables (batch dimension first, as None)."""
        return {}

    def aux_signature(self) -> dict[str, tf.TensorSpec]:
        """Per-sample inputs a run takes besides x and the goal (batch first), e.g. a target class."""
        return {}

    def initial_extra(self, x: tf.Tensor, x_adv: tf.Tensor, step_size: tf.Tensor) -> Extras:
        """Graph code: the attack's own variables at the start point `x_adv`."""
        return {}

    def start_point(
        self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]
    ) -> tf.Tensor:
        """Graph code: the random start (the base projects it); default uniform in the eps ball."""
        return x + self.norm.random_start(x, eps, seed)

    def step_objective(self, logits: tf.Tensor, goal: tf.Tensor, extra: Extras) -> tf.Tensor:
        """Graph code: what each step maximises (and differentiates); default the attack's objective."""
        return self.objective(logits, goal)

    # --- Attack's interface ---------------------------------------------------------------------------
    @property
    def gradient_steps(self) -> int:
        return self.steps * self.eot_iter

    @property
    def restarts(self) -> int:
        return self._restarts

    def max_passes(self) -> tuple[int, int]:
        evaluations = self.steps * self.eot_iter
        backward = evaluations if self.uses_gradient else 0
        return (evaluations + 1) * self.restarts, backward * self.restarts

    def config(self) -> tuple[Any, ...]:
        return (*super().config(), self.steps, self.random_start, self.early_stop, self.eot_iter)

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
        """The whole run in one graph (the compiled path splits it into chunks; see `_build`)."""
        if self.aux_signature():
            raise NotImplementedError(f"{type(self).__name__} runs through its compiled path only")
        state = self._start(x, eps, step_size, seed, bounds, {})
        state = self._iterate(
            logits, x, goal, state, eps, step_size, seed, tf.constant(0), bounds, self.steps
        )
        return self._select(x, state)

    # --- the loop ---------------------------------------------------------------------------------------
    def _start(
        self,
        x: tf.Tensor,
        eps: tf.Tensor,
        step_size: tf.Tensor,
        seed: tf.Tensor,
        bounds: tuple[float, float],
        aux: Extras,
    ) -> Extras:
        x_adv = x
        if self.random_start:
            x_adv = self.norm.project(self.start_point(x, eps, seed, bounds), x, eps, *bounds)
        n = tf.shape(x)[:1]
        state = {
            "x_adv": x_adv,
            "found": tf.zeros(n, tf.bool),
            "first_hit": x_adv,
            "best_x": x_adv,
            "best_objective": tf.fill(n, tf.constant(-np.inf, tf.float32)),
        }
        return {**state, **self.initial_extra(x, x_adv, step_size), **aux}

    def _evaluate(
        self, logits: Logits, x_adv: tf.Tensor, goal: tf.Tensor, extra: Extras
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """Logits, step objective and gradient at `x_adv`; the gradient and objective averaged over draws.

        The success check uses the last draw's logits, as AutoAttack's EOT does.
        """

        def values(z: tf.Tensor) -> tf.Tensor:
            return self.step_objective(z, goal, extra)

        if not self.uses_gradient:
            z = tf.cast(logits(x_adv), tf.float32)
            return z, values(z), None
        z, obj, grad = self.objective_and_gradient(logits, x_adv, goal, values)
        for _ in range(self.eot_iter - 1):  # unrolled: each draw is its own call of a stochastic model
            z, more, more_grad = self.objective_and_gradient(logits, x_adv, goal, values)
            obj, grad = obj + more, grad + more_grad
        if self.eot_iter > 1:
            obj, grad = obj / self.eot_iter, grad / self.eot_iter
        return z, obj, grad

    def _iterate(
        self,
        logits: Logits,
        x: tf.Tensor,
        goal: tf.Tensor,
        state: Extras,
        eps: tf.Tensor,
        step_size: tf.Tensor,
        seed: tf.Tensor,
        first_index: tf.Tensor,
        bounds: tuple[float, float],
        steps: int,
    ) -> Extras:
        state = dict(state)
        for offset in range(steps):  # unrolled into the graph: measured at the floor, unlike tf.while_loop
            x_adv = state["x_adv"]
            extra = {k: v for k, v in state.items() if k not in _CORE}
            z, obj, grad = self._evaluate(logits, x_adv, goal, extra)
            success = is_success(z, goal, targeted=self.targeted)
            if not self.iterates_in_ball:
                # Inside the ball exactly when the final projection leaves the point where it is.
                inside = self.norm.project(x_adv, x, eps, *bounds)
                flat = tf.reshape(tf.equal(inside, x_adv), [tf.shape(x_adv)[0], -1])
                success = tf.logical_and(success, tf.reduce_all(flat, axis=1))
            hit = tf.logical_and(success, tf.logical_not(state["found"]))
            improved = obj > state["best_objective"]
            best_x = tf.where(per_sample(improved, x), x_adv, state["best_x"])
            best_objective = tf.where(improved, obj, state["best_objective"])
            view = IterState(
                x=x, goal=goal, eps=eps, step_size=step_size, index=first_index + offset, x_adv=x_adv,
                logits=z, objective=obj, best_x=best_x, best_objective=best_objective, improved=improved,
                bounds=bounds, seed=seed, extra=extra,
            )  # fmt: skip
            proposal, updated = self.advance(view, grad)
            lo, hi = bounds
            following = (
                self.norm.project(proposal, x, eps, lo, hi)
                if self.iterates_in_ball
                else tf.clip_by_value(proposal, lo, hi)
            )
            state = {
                **extra,  # the per-sample inputs, which a step does not return
                **updated,
                "x_adv": following,
                "found": tf.logical_or(state["found"], hit),
                "first_hit": tf.where(per_sample(hit, x), x_adv, state["first_hit"]),
                "best_x": best_x,
                "best_objective": best_objective,
            }
        return state

    def _select(self, x: tf.Tensor, state: Extras) -> tf.Tensor:
        fallback = state["x_adv"] if self.returns_last_iterate else state["best_x"]
        return tf.where(per_sample(state["found"], x), state["first_hit"], fallback)

    def _build(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        loop = self._loop(model, bounds)

        def run(
            x: np.ndarray,
            goal: np.ndarray,
            eps: np.float32,
            step_size: np.float32,
            seed: np.ndarray,
            check: Callable[[], None] | None = None,
        ) -> RunOutput:
            return loop.run(x, goal, eps, step_size, seed, {}, check)

        return CompiledAttack(run, loop.graphs)

    def _loop(self, model: LoadedModel, bounds: tuple[float, float]) -> _Loop:
        """Graphs for the start, a chunk of steps (and a shorter last chunk), and the scoring pass."""
        length = max(1, CHUNK_STEPS // self.eot_iter)  # the EOT draws share a chunk's model evaluations
        chunks = [length] * (self.steps // length) + [self.steps % length]
        chunks = [steps for steps in chunks if steps]
        batch = tf.TensorSpec((None, *model.input_shape), tf.float32)
        labels = tf.TensorSpec((None,), tf.int64)
        scalar = tf.TensorSpec((), tf.float32)
        seed_spec = tf.TensorSpec((2,), tf.int64)
        aux_signature = self.aux_signature()
        state_signature = {
            "x_adv": batch,
            "found": tf.TensorSpec((None,), tf.bool),
            "first_hit": batch,
            "best_x": batch,
            "best_objective": tf.TensorSpec((None,), tf.float32),
            **self.extra_signature(tuple(model.input_shape)),
            **aux_signature,
        }

        def start(x: tf.Tensor, eps: tf.Tensor, step_size: tf.Tensor, seed: tf.Tensor, aux: Extras) -> Extras:
            return self._start(x, eps, step_size, seed, bounds, aux)

        def chunk_graph(steps: int) -> Any:
            def chunk(
                x: tf.Tensor,
                goal: tf.Tensor,
                state: Extras,
                eps: tf.Tensor,
                step_size: tf.Tensor,
                seed: tf.Tensor,
                first_index: tf.Tensor,
            ) -> Extras:
                return self._iterate(
                    model.logits, x, goal, state, eps, step_size, seed, first_index, bounds, steps
                )

            index = tf.TensorSpec((), tf.int32)
            signature = [batch, labels, state_signature, scalar, scalar, seed_spec, index]
            return tf.function(chunk, input_signature=signature, autograph=False)

        def finish(x: tf.Tensor, goal: tf.Tensor, x_adv: tf.Tensor, eps: tf.Tensor) -> Any:
            return self.score(model.logits, x, x_adv, goal, eps, bounds)

        start_signature = [batch, scalar, scalar, seed_spec, aux_signature]
        start_fn = tf.function(start, input_signature=start_signature, autograph=False)
        chunk_fns = {steps: chunk_graph(steps) for steps in sorted(set(chunks))}
        finish_fn = tf.function(finish, input_signature=[batch, labels, batch, scalar], autograph=False)
        draws = self.eot_iter if self.uses_gradient else 1
        return _Loop(self, chunks, start_fn, chunk_fns, finish_fn, draws)


@dataclass(frozen=True)
class _Loop:
    """The traced graphs of one iterative attack and the Python driver that runs them chunk by chunk."""

    attack: IterativeAttack
    chunks: list[int]
    start_fn: Any
    chunk_fns: dict[int, Any]
    finish_fn: Any
    draws: int  # forward (and backward) passes per step and sample

    @property
    def graphs(self) -> list[Any]:
        return [self.start_fn, *self.chunk_fns.values(), self.finish_fn]

    def run(
        self,
        x: np.ndarray,
        goal: np.ndarray,
        eps: np.float32,
        step_size: np.float32,
        seed: np.ndarray,
        aux: dict[str, np.ndarray],
        check: Callable[[], None] | None = None,
    ) -> RunOutput:
        """One run from the start point; the passes per sample include its scoring pass."""
        attack = self.attack
        chosen = np.empty_like(x)
        steps_done = np.zeros(x.shape[0], np.int64)
        active = np.arange(x.shape[0])
        x_now, goal_now = x, goal
        state = self.start_fn(x, eps, step_size, seed, aux)
        first = 0
        for index, steps in enumerate(self.chunks):
            if index > 0:
                if check is not None:
                    check()
                if attack.early_stop:
                    found = state["found"].numpy()
                    if found.any():
                        chosen[active[found]] = state["first_hit"].numpy()[found]
                        keep = ~found
                        active, x_now, goal_now = active[keep], x_now[keep], goal_now[keep]
                        state = {k: tf.boolean_mask(t, keep) for k, t in state.items()}
                    if active.size == 0:
                        break
            state = self.chunk_fns[steps](x_now, goal_now, state, eps, step_size, seed, np.int32(first))
            steps_done[active] += steps
            first += steps
        if active.size:
            chosen[active] = attack._select(x_now, state).numpy()
        x_adv, pred, success, obj = (t.numpy() for t in self.finish_fn(x, goal, chosen, eps))
        evaluations = steps_done * self.draws
        backward = evaluations if attack.uses_gradient else np.zeros_like(evaluations)
        return x_adv, pred, success, obj, evaluations + 1, backward
