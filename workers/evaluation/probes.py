"""Checks on the model itself before it is attacked, each as one sentence: is it random, does it saturate.

A random model (dropout or noise at inference) answers differently to the same input, so one attack
run understates an attacker who averages over draws; a saturated softmax has no cross-entropy gradient,
so cross-entropy attacks stall. Both are read off a few probe samples, two forward passes each.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from service.domain.specs import AutoAttackSpec, EvaluationOptions
from workers.models.loading import LoadedModel

PROBE_SAMPLES = 64
# Logits that differ by more than this (relative to their size) between two passes come from a random model.
RANDOM_TOLERANCE = 1e-4
SATURATED_FRACTION = 0.10


def probe_passes(num_samples: int) -> int:
    """Forward passes the probes make on an evaluation of `num_samples` samples."""
    return 2 * min(num_samples, PROBE_SAMPLES)


def model_warnings(model: LoadedModel, x: np.ndarray, options: EvaluationOptions) -> list[str]:
    """The probes' warnings on the first samples of `x` (already shaped and in range)."""
    sample = tf.constant(x[:PROBE_SAMPLES], tf.float32)
    first = tf.cast(model.logits(sample), tf.float32).numpy()
    second = tf.cast(model.logits(sample), tf.float32).numpy()
    m = first.shape[0]
    warnings = []
    gap = np.abs(first - second) > RANDOM_TOLERANCE * (1.0 + np.abs(first))
    random = int(gap.any(axis=1).sum())
    if random:
        uses_rand = any(isinstance(a, AutoAttackSpec) and a.version == "rand" for a in options.attacks)
        advice = (
            "this evaluation's autoattack version rand averages gradients over draws"
            if uses_rand
            else 'evaluate it with {"name": "autoattack", "version": "rand"}, which averages gradients '
            "over 20 draws (expectation over transformation)"
        )
        warnings.append(
            f"the model's outputs differ between two forward passes on {random} of {m} probe samples: "
            f"it is random, so a single attack run understates what an attacker can do; {advice}"
        )
    probabilities = tf.nn.softmax(first).numpy()
    saturated = int(((probabilities > 0).sum(axis=1) == 1).sum())
    if saturated > SATURATED_FRACTION * m:
        warnings.append(
            f"the softmax of the model's outputs is saturated on {saturated} of {m} probe samples (every "
            "class but the top one has probability exactly 0 in float32): the cross-entropy has no "
            "gradient there, so cross-entropy attacks (fgsm, pgd, apgd-ce) overstate robustness; "
            "margin losses (pgd with loss cw, apgd-dlr, autoattack) do not"
        )
    return warnings
