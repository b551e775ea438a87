"""Targeted FAB, the fast adaptive boundary attack, answering the bounded question (Croce & Hein, 2020).

FAB is a minimum-norm attack: its iterates walk along the decision boundary towards the input and may lie
outside the eps ball, so it runs on the iterative base with `iterates_in_ball = False` (iterates stay in
the input range only) and a sample counts as broken at its first adversarial iterate inside the ball; the
final projection of `Attack.__call__` then leaves that point where it is. A sample never broken inside the
ball returns its iterate closest to the target's side of the boundary, projected into the ball.

Two differences from AutoAttack's implementation, both for speed at no change of the step itself:
- one forward and one backward pass per iteration. AutoAttack evaluates the new iterate once more to see
  whether it is adversarial; here the next iteration's evaluation answers that, and after a success the
  backward step towards the input reuses the linearisation at the adversarial point rather than paying
  for a new gradient at the backed-off one.
- a sample stops at its first adversarial inside the ball (the bounded question needs no smaller one).
"""

from __future__ import annotations

import tensorflow as tf

from service.domain.specs import DEFAULT_TARGET_CLASSES, AttackSpecBase, FABTSpec
from workers.attacks.base import expect_spec
from workers.attacks.iterative import Extras, IterState
from workers.attacks.losses import is_success
from workers.attacks.norms import Norm, per_sample
from workers.attacks.targets import TargetSweep

_TINY = 1e-8


class FABT(TargetSweep):
    """Targeted FAB (Croce & Hein, 2020, "Minimally distorted adversarial examples with a fast adaptive
    boundary attack"), FAB-T of AutoAttack, in L-inf or L2.

    For each target class t of the top `n_target_classes` (other than the label), every iteration
    linearises the logit difference f = z_t - z_y at the iterate, projects both the iterate and the input
    onto the hyperplane f = 0 within the input range (the norm's minimal step), and moves to a convex
    combination of the two projections, overshot by `eta` and weighted towards the input's by
    alpha = min(|d_iterate| / (|d_iterate| + |d_input|), alpha_max). After an adversarial iterate outside
    the ball, it first steps back towards the input by `beta`. Success is untargeted.

    Args:
        steps: iterations per target class and restart (AutoAttack: 100).
        n_target_classes: target classes tried (AutoAttack: 9; capped at the model's classes - 1).
        restarts: starts per target class; with more than one, each starts at a random point of the ball
            of radius eps / 2, as AutoAttack's restarts do (its first restart starts at the input).
        alpha_max, eta, beta: the paper's step parameters (0.1, 1.05, 0.9).
        norm: "linf" or "l2".
        early_stop: drop broken samples between chunks (same result, less work).
    """

    name = "fab-t"
    iterates_in_ball = False

    def __init__(
        self,
        *,
        steps: int = 100,
        n_target_classes: int = DEFAULT_TARGET_CLASSES,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        norm: str | Norm = "linf",
        early_stop: bool = True,
    ) -> None:
        if n_target_classes < 1:
            raise ValueError(f"n_target_classes must be at least 1, not {n_target_classes}")
        super().__init__(
            steps=steps, random_start=restarts > 1, restarts=restarts, loss="cw", norm=norm,
            early_stop=early_stop,
        )  # fmt: skip
        self.n_target_classes = n_target_classes
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta
        if type(self.norm).boundary_rate is Norm.boundary_rate:
            raise ValueError(f"fab-t runs in L-inf or L2, not {self.norm.name} (no boundary projection)")

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> FABT:
        spec = expect_spec(spec, FABTSpec)
        return cls(
            steps=spec.steps,
            n_target_classes=spec.n_target_classes,
            restarts=spec.restarts,
            alpha_max=spec.alpha_max,
            eta=spec.eta,
            beta=spec.beta,
            norm=spec.norm,
        )

    def config(self) -> tuple[object, ...]:
        return (*super().config(), self.alpha_max, self.eta, self.beta)

    def start_point(
        self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]
    ) -> tf.Tensor:
        return x + 0.5 * self.norm.random_start(x, eps, seed)

    def step_objective(self, logits: tf.Tensor, goal: tf.Tensor, extra: Extras) -> tf.Tensor:
        # The linearised function: positive once the target's logit passes the label's.
        target = self.target_of(extra)
        return tf.gather(logits, target, batch_dims=1) - tf.gather(logits, goal, batch_dims=1)

    def advance(self, state: IterState, grad: tf.Tensor | None) -> tuple[tf.Tensor, Extras]:
        assert grad is not None  # FAB uses gradients
        lo, hi = state.bounds
        x, here = state.x, state.x_adv
        # A success outside the ball: back off towards the input, then search again from there.
        fooled = per_sample(is_success(state.logits, state.goal, targeted=False), x)
        start = tf.where(fooled, x + self.beta * (here - x), here)
        # The hyperplane f(here) + grad · (p - here) = 0; the step d from p must satisfy grad · d = -f(p).
        slope = tf.reshape(grad, [tf.shape(x)[0], -1])

        def residual(point: tf.Tensor) -> tf.Tensor:
            offset = tf.reshape(point - here, [tf.shape(x)[0], -1])
            return -(state.objective + tf.reduce_sum(slope * offset, axis=1))

        # Both projections in one call: the same work in half the kernel launches.
        points, needs = tf.concat([start, x], 0), tf.concat([residual(start), residual(x)], 0)
        both = self.norm.boundary_step(points, tf.concat([grad, grad], 0), needs, lo, hi)
        d_start, d_input = tf.split(both, 2, axis=0)
        size_start = tf.maximum(self.norm.distance(d_start), _TINY)
        size_input = tf.maximum(self.norm.distance(d_input), _TINY)
        alpha = per_sample(tf.minimum(size_start / (size_start + size_input), self.alpha_max), x)
        proposal = (start + self.eta * d_start) * (1.0 - alpha) + (x + self.eta * d_input) * alpha
        return proposal, state.extra
