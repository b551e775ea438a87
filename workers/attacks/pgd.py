"""Projected Gradient Descent with random start, restarts and a choice of loss."""

from __future__ import annotations

import tensorflow as tf

from service.domain.specs import AttackSpecBase, PGDSpec
from workers.attacks.base import expect_spec
from workers.attacks.iterative import IterativeAttack, IterState
from workers.attacks.losses import LossName
from workers.attacks.norms import Norm


class PGD(IterativeAttack):
    """Projected Gradient Descent (Madry et al., 2018) in L-inf, L2 or L1.

    Each step moves `step_size` along the norm's ascent direction and projects back into the eps ball and
    the input range. The first iterate at which a sample is misclassified (or hits its target) is kept
    even if later steps wander back; a sample never fooled returns the last iterate, as in Madry et al.

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
    # The last iterate, not the best-loss one: what PGD returned before the iterative base existed, so
    # its results stay the same (a fooled sample returns its first successful iterate either way).
    returns_last_iterate = True

    def __init__(
        self,
        *,
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: LossName = "ce",
        norm: str | Norm = "linf",
        targeted: bool = False,
        target: int | None = None,
        early_stop: bool = True,
    ) -> None:
        super().__init__(
            steps=steps, random_start=random_start, restarts=restarts, loss=loss, norm=norm,
            targeted=targeted, target=target, early_stop=early_stop,
        )  # fmt: skip
        self.step_size = step_size

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> PGD:
        spec = expect_spec(spec, PGDSpec)
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

    def step_size_for(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else 2.5 * eps / self.steps

    def step(self, state: IterState, grad: tf.Tensor) -> tf.Tensor:
        return state.x_adv + state.step_size * self.norm.ascent_direction(grad)
