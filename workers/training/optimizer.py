"""Adam over plain `tf.Variable`s, whose whole state is a list of arrays.

The variables of an uploaded SavedModel are not Keras variables, and checkpointing needs the exact
optimizer state as arrays, so the few lines of Adam (Kingma and Ba, 2015; Keras's epsilon) live here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class Adam:
    """Adam with bias correction; the learning rate is a tensor argument, so schedules never retrace.

    Args:
        variables: the variables to update; their moment slots are created here, outside any graph.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        *,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        self.variables = list(variables)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="adam_step")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="adam_m") for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="adam_v") for v in self.variables]

    def apply(self, grads: Sequence[tf.Tensor | None], learning_rate: tf.Tensor) -> None:
        """Graph code: one update; a variable without a gradient is left alone."""
        step = tf.cast(self.step.assign_add(1), tf.float32)
        scale = learning_rate * tf.sqrt(1.0 - tf.pow(self.beta_2, step)) / (1.0 - tf.pow(self.beta_1, step))
        for var, grad, m, v in zip(self.variables, grads, self.m, self.v, strict=True):
            if grad is None:
                continue
            grad = tf.cast(grad, var.dtype)
            m.assign_add((1.0 - self.beta_1) * (grad - m))
            v.assign_add((1.0 - self.beta_2) * (tf.square(grad) - v))
            var.assign_sub(tf.cast(scale, var.dtype) * m / (tf.sqrt(v) + self.epsilon))

    def state(self) -> list[np.ndarray]:
        return [np.asarray(self.step.numpy())] + [s.numpy() for s in (*self.m, *self.v)]

    def restore(self, arrays: Sequence[np.ndarray]) -> None:
        n = len(self.variables)
        if len(arrays) != 1 + 2 * n:
            raise ValueError(f"optimizer state holds {len(arrays)} arrays, expected {1 + 2 * n}")
        self.step.assign(int(arrays[0]))
        for slot, value in zip((*self.m, *self.v), arrays[1:], strict=True):
            slot.assign(value)
