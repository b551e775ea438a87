"""Per-sample scores read from a model's logits: the clean confidence and the OOD detection scores.

Every score is higher for what the model takes as in-distribution: msp (the top softmax probability, also
the confidence calibration is measured on), max_logit and energy (logsumexp of the logits, the negative
free energy of Liu et al., 2020). For a model that emits probabilities the logits are log-probabilities,
so its energy is 0 for every sample (workers/models/loading.py).
"""

from __future__ import annotations

import tensorflow as tf

from service.domain.specs import OOD_SCORES

# The columns of a score array, in order.
SCORE_COLUMNS: tuple[str, ...] = OOD_SCORES
MSP = SCORE_COLUMNS.index("msp")


def scores_of(logits: tf.Tensor) -> tf.Tensor:
    """(N, 3) float32: msp, max_logit and energy of each row of logits."""
    z = tf.cast(logits, tf.float32)
    msp = tf.reduce_max(tf.nn.softmax(z, axis=-1), axis=-1)
    return tf.stack([msp, tf.reduce_max(z, axis=-1), tf.reduce_logsumexp(z, axis=-1)], axis=1)
