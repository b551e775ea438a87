"""Per-sample attack objectives on logits, written so that the attack always MAXIMISES them.

An untargeted attack maximises the loss of the true label; a targeted one maximises the negated loss of
its target class, so one gradient-ascent loop serves both.
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

LossName = Literal["ce", "cw", "dlr"]


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy per sample; on log-probabilities it equals the negative log-likelihood."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def margin(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Carlini-Wagner margin max_{j != y} z_j - z_y per sample: positive exactly when y is not predicted."""
    own = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    z_label = tf.reduce_sum(tf.where(own, logits, tf.zeros_like(logits)), axis=-1)
    z_other = tf.reduce_max(tf.where(own, tf.fill(tf.shape(logits), logits.dtype.min), logits), axis=-1)
    return z_other - z_label


def difference_of_logits_ratio(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Croce & Hein's (2020) DLR loss, -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), per sample.

    Dividing the margin by the spread of the top logits makes it invariant to shifting and scaling the
    logits, so it keeps a gradient where a saturated cross-entropy has none. It needs three classes.
    """
    top = tf.math.top_k(logits, k=3).values
    return margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(logits: tf.Tensor, labels: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Croce & Hein's targeted DLR, (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2), per sample (maximised).

    With three classes the fourth logit does not exist and z_pi3 stands in for it.
    """
    k = min(4, int(logits.shape[-1])) if logits.shape[-1] is not None else 4
    top = tf.math.top_k(logits, k=k).values
    z_label = tf.gather(logits, labels, batch_dims=1)
    z_target = tf.gather(logits, targets, batch_dims=1)
    return (z_target - z_label) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, k - 1]) + 1e-12)


def objective(logits: tf.Tensor, goal: tf.Tensor, *, loss: LossName, targeted: bool) -> tf.Tensor:
    """What the attack maximises; `goal` is the true label, or the target class when targeted."""
    if loss == "dlr":
        if targeted:
            # The targeted DLR has another formula (it needs both the label and the target).
            raise ValueError("the DLR loss is untargeted only")
        return difference_of_logits_ratio(logits, goal)
    value = cross_entropy(logits, goal) if loss == "ce" else margin(logits, goal)
    return -value if targeted else value


def is_success(logits: tf.Tensor, goal: tf.Tensor, *, targeted: bool) -> tf.Tensor:
    """Untargeted: the label is no longer predicted. Targeted: the target is predicted."""
    pred = tf.argmax(logits, axis=-1, output_type=goal.dtype)
    return tf.equal(pred, goal) if targeted else tf.not_equal(pred, goal)
