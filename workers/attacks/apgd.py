"""Auto-PGD: PGD with momentum and a step size that halves at checkpoints when progress stalls."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import tensorflow as tf

from service.domain.specs import DEFAULT_TARGET_CLASSES, APGDCESpec, APGDDLRSpec, APGDTSpec, AttackSpecBase
from workers.attacks.base import expect_spec
from workers.attacks.iterative import Extras, IterativeAttack, IterState
from workers.attacks.losses import LossName, targeted_dlr
from workers.attacks.norms import Norm, per_sample
from workers.attacks.targets import TargetSweep

# The paper's constants: momentum weight, the fraction of improving steps a window must reach, and the
# checkpoint schedule p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
MOMENTUM = 0.75
RHO = 0.75
_FIRST, _DECAY, _MIN_WINDOW = 0.22, 0.03, 0.06


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps) at which APGD may halve its step size (w_0 = 0 excluded)."""
    fractions = [0.0, _FIRST]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - _DECAY, _MIN_WINDOW))
    # The tolerance keeps float noise (0.22 * 100 = 22.000000000000004) from pushing a checkpoint up one.
    points = sorted({math.ceil(p * steps - 1e-9) for p in fractions[1:]})
    return [w for w in points if 0 < w < steps]


class APGD(IterativeAttack):
    """Auto-PGD (Croce & Hein, 2020, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks"), in L-inf or L2.

    It starts at a random point with step size 2 * eps. Each step takes a projected step along the norm's
    ascent direction, then mixes it with the previous move (momentum 0.75; none on the first step). At the
    checkpoints w_j the step size of a sample halves, and the sample restarts from its best point so far,
    when fewer than 75% of the steps since the last checkpoint raised the loss, or when neither its step
    size nor its best loss changed since the last checkpoint. A sample never fooled returns its point of
    highest loss, not the last iterate.

    Args:
        steps: gradient steps per restart (the paper's N_iter; 100).
        restarts: independent random starts; each sample keeps its worst case.
        loss: "ce" (APGD-CE) or "dlr" (APGD-DLR).
        norm, targeted, target: as for every attack (the DLR loss is untargeted only).
        early_stop: drop succeeded samples between chunks (same result, less work).
        eot_iter: gradients averaged over this many draws per step (stochastic models; AutoAttack's
            `rand` version uses 20).
    """

    name = "apgd"

    # The loss a subclass stands for (APGD-CE, APGD-DLR), unless the constructor names another.
    loss_kind: ClassVar[LossName] = "ce"

    def __init__(
        self,
        *,
        steps: int = 100,
        restarts: int = 1,
        loss: LossName | None = None,
        norm: str | Norm = "linf",
        targeted: bool = False,
        target: int | None = None,
        early_stop: bool = True,
        eot_iter: int = 1,
    ) -> None:
        super().__init__(
            steps=steps, random_start=True, restarts=restarts, loss=loss or self.loss_kind, norm=norm,
            targeted=targeted, target=target, early_stop=early_stop, eot_iter=eot_iter,
        )  # fmt: skip
        # window[i] = w_j - w_{j-1} when i is the checkpoint w_j, else 0: looked up with the step's index
        # tensor, so every chunk of the same length shares one graph.
        window = np.zeros(steps, np.float32)
        previous = 0
        for point in checkpoints(steps):
            window[point], previous = point - previous, point
        self._window = window

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> APGD:
        raise NotImplementedError("APGD is built through APGDCE or APGDDLR")

    def step_size_for(self, eps: float) -> float:
        return 2.0 * eps

    def extra_signature(self, input_shape: tuple[int, ...]) -> dict[str, tf.TensorSpec]:
        batch = tf.TensorSpec((None, *input_shape), tf.float32)
        values = tf.TensorSpec((None,), tf.float32)
        return {
            "eta": values,
            "x_prev": batch,
            "grad_best": batch,
            "last_objective": values,
            "increases": values,
            "best_at_check": values,
            "reduced_last": tf.TensorSpec((None,), tf.bool),
        }

    def initial_extra(self, x: tf.Tensor, x_adv: tf.Tensor, step_size: tf.Tensor) -> Extras:
        n = tf.shape(x)[:1]
        return {
            "eta": tf.fill(n, step_size),
            "x_prev": x_adv,
            "grad_best": tf.zeros_like(x),
            # +inf: the start point has no predecessor, so it does not count as an increase.
            "last_objective": tf.fill(n, tf.constant(np.inf, tf.float32)),
            "increases": tf.zeros(n, tf.float32),
            "best_at_check": tf.fill(n, tf.constant(-np.inf, tf.float32)),
            "reduced_last": tf.zeros(n, tf.bool),
        }

    def advance(self, state: IterState, grad: tf.Tensor) -> tuple[tf.Tensor, Extras]:
        extra, x = state.extra, state.x
        first = tf.equal(state.index, 0)
        grad_best = tf.where(per_sample(state.improved, x), grad, extra["grad_best"])
        # The best loss "at w_0" is the loss of the start point.
        best_at_check = tf.where(first, state.objective, extra["best_at_check"])
        increases = extra["increases"] + tf.cast(state.objective > extra["last_objective"], tf.float32)

        window = tf.gather(tf.constant(self._window), state.index)
        at_check = window > 0
        oscillating = increases < RHO * window
        stalled = tf.logical_and(tf.logical_not(extra["reduced_last"]), state.best_objective <= best_at_check)
        reduce = tf.logical_and(at_check, tf.logical_or(oscillating, stalled))
        eta = tf.where(reduce, 0.5 * extra["eta"], extra["eta"])
        base = tf.where(per_sample(reduce, x), state.best_x, state.x_adv)
        direction = tf.where(per_sample(reduce, x), grad_best, grad)

        lo, hi = state.bounds
        moved = base + per_sample(eta, x) * self.norm.ascent_direction(direction)
        z = self.norm.project(moved, x, state.eps, lo, hi)
        alpha = tf.where(first, 1.0, MOMENTUM)
        proposal = base + alpha * (z - base) + (1.0 - alpha) * (base - extra["x_prev"])
        return proposal, {
            "eta": eta,
            "x_prev": base,
            "grad_best": grad_best,
            "last_objective": state.objective,
            "increases": tf.where(at_check, tf.zeros_like(increases), increases),
            "best_at_check": tf.where(at_check, state.best_objective, best_at_check),
            "reduced_last": tf.where(at_check, reduce, extra["reduced_last"]),
        }


class APGDCE(APGD):
    """APGD on the cross-entropy, APGD-CE of Croce & Hein (2020); see `APGD`.

    Args:
        steps, restarts, norm, targeted, target, early_stop, eot_iter: as for `APGD` (the loss is CE).
    """

    name = "apgd-ce"
    loss_kind: ClassVar[LossName] = "ce"

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> APGDCE:
        spec = expect_spec(spec, APGDCESpec)
        return cls(
            steps=spec.steps,
            restarts=spec.restarts,
            norm=spec.norm,
            targeted=spec.targeted,
            target=spec.target,
            eot_iter=spec.eot_iter,
        )


class APGDDLR(APGD):
    """APGD on the Difference of Logits Ratio, APGD-DLR of Croce & Hein (2020); see `APGD`.

    The DLR loss is invariant to the scale of the logits, so it still has a gradient where the
    cross-entropy saturates; it is untargeted and needs at least three classes.

    Args:
        steps, restarts, norm, early_stop, eot_iter: as for `APGD` (the loss is DLR).
    """

    name = "apgd-dlr"
    loss_kind: ClassVar[LossName] = "dlr"

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> APGDDLR:
        spec = expect_spec(spec, APGDDLRSpec)
        return cls(steps=spec.steps, restarts=spec.restarts, norm=spec.norm, eot_iter=spec.eot_iter)


class APGDT(TargetSweep, APGD):
    """Targeted APGD on the targeted DLR loss over the top-k classes, APGD-T of Croce & Hein (2020).

    For each of the `n_target_classes` classes of highest clean logit other than the label (at most the
    model's classes - 1), a full APGD run maximises (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2) on the
    samples no earlier target broke; each sample keeps its best point. Success is untargeted: any class
    other than the label. Between runs, failures are compared on the untargeted DLR loss.

    Args:
        steps: gradient steps per target class and restart (100).
        n_target_classes: how many target classes to try (AutoAttack's 9).
        restarts, norm, early_stop, eot_iter: as for `APGD`.
    """

    name = "apgd-t"
    loss_kind: ClassVar[LossName] = "dlr"

    def __init__(
        self,
        *,
        steps: int = 100,
        n_target_classes: int = DEFAULT_TARGET_CLASSES,
        restarts: int = 1,
        norm: str | Norm = "linf",
        early_stop: bool = True,
        eot_iter: int = 1,
    ) -> None:
        if n_target_classes < 1:
            raise ValueError(f"n_target_classes must be at least 1, not {n_target_classes}")
        super().__init__(steps=steps, restarts=restarts, norm=norm, early_stop=early_stop, eot_iter=eot_iter)
        self.n_target_classes = n_target_classes

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> APGDT:
        spec = expect_spec(spec, APGDTSpec)
        return cls(
            steps=spec.steps,
            n_target_classes=spec.n_target_classes,
            restarts=spec.restarts,
            norm=spec.norm,
            eot_iter=spec.eot_iter,
        )

    def step_objective(self, logits: tf.Tensor, goal: tf.Tensor, extra: Extras) -> tf.Tensor:
        return targeted_dlr(logits, goal, self.target_of(extra))
