"""Fast Gradient Sign Method: one step of size eps along the ascent direction."""

from __future__ import annotations

import tensorflow as tf

from service.domain.specs import AttackSpecBase, FGSMSpec
from workers.attacks.base import Attack, Logits, expect_spec


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015); in L2 it steps along the normalised gradient.

    Args:
        norm: "linf" (sign of the gradient) or "l2" (gradient scaled to length eps).
        targeted: step towards a target class (descending its cross-entropy).
        target: the target class; None picks a seeded random class other than the label.
    """

    name = "fgsm"

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> FGSM:
        spec = expect_spec(spec, FGSMSpec)
        return cls(norm=spec.norm, targeted=spec.targeted, target=spec.target)

    @property
    def gradient_steps(self) -> int:
        return 1

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
        _, grad = self.value_and_gradient(logits, x, goal)
        return x + eps * self.norm.ascent_direction(grad)
