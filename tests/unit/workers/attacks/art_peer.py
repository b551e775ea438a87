"""IBM ART as the peer of the strong attacks (tests and bench/attacks_strong.py): targeted APGD and Square.

ART's own DLR loss loops over the batch in Python; `VectorisedDLR` is the same formula in one batched
expression, so a comparison measures ART's attack loop rather than that loop (DESIGN.md).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def _art() -> Any:
    with warnings.catch_warnings():
        # ART announces optional back ends it did not find when it is imported; nothing we use needs them.
        warnings.filterwarnings("ignore", message="PyTorch not found", category=UserWarning)
        import art.attacks.evasion as evasion
        from art.estimators.classification import TensorFlowV2Classifier
    return evasion, TensorFlowV2Classifier


class VectorisedDLR:
    """ART's TensorFlow DLR loss, -(z_y - z_i) / (z_pi1 - z_pi3) with z_i the top class other than y, batched.

    In a targeted run ART passes the target as y and inverts the gradient. `reduction` is what ART's
    `compute_loss` sets ("none", "sum_over_batch_size" or "sum"; "mean" by default).
    """

    def __init__(self) -> None:
        self.reduction = "mean"

    def __call__(self, y_true: Any, y_pred: Any, *args: Any, **kwargs: Any) -> Any:
        import tensorflow as tf

        label = tf.argmax(y_true, axis=1, output_type=tf.int32)
        order = tf.argsort(y_pred, axis=1, direction="DESCENDING")
        other = tf.where(order[:, 0] == label, order[:, 1], order[:, 0])
        top = tf.gather(y_pred, order, batch_dims=1)
        z_y = tf.gather(y_pred, label, batch_dims=1)
        z_i = tf.gather(y_pred, other, batch_dims=1)
        dlr = -(z_y - z_i) / (top[:, 0] - top[:, 2])
        if self.reduction == "none":
            return dlr
        return tf.reduce_sum(dlr) if self.reduction == "sum" else tf.reduce_mean(dlr)


def classifier(keras_model: Any, loss: Any = None, num_classes: int = 10) -> Any:
    import tensorflow as tf

    _, TensorFlowV2Classifier = _art()
    return TensorFlowV2Classifier(
        model=keras_model,
        nb_classes=num_classes,
        input_shape=tuple(keras_model.input_shape[1:]),
        loss_object=loss or tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )


def _norm(norm: str) -> float | int:
    return np.inf if norm == "linf" else 2


def targeted_apgd_robust(
    keras_model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    steps: int,
    targets: int,
    norm: str = "linf",
    batch_size: int = 250,
    seed: int = 0,
) -> np.ndarray:
    """Which samples stay correct under ART's targeted APGD-DLR, one run per top class on the survivors."""
    evasion, _ = _art()
    model = classifier(keras_model, VectorisedDLR())
    logits = model.predict(x, batch_size=batch_size)
    robust = np.argmax(logits, axis=1) == y
    ranked = np.argsort(np.where(np.eye(logits.shape[1], dtype=bool)[y], -np.inf, logits), axis=1)[:, ::-1]
    attack = evasion.AutoProjectedGradientDescent(
        model, norm=_norm(norm), eps=eps, eps_step=2 * eps, max_iter=steps, targeted=True, nb_random_init=1,
        batch_size=batch_size, loss_type=None, verbose=False,
    )  # fmt: skip
    np.random.seed(seed)  # ART draws its random start from NumPy's global generator
    for rank in range(targets):
        chosen = np.flatnonzero(robust)
        if chosen.size == 0:
            break
        target = np.eye(logits.shape[1], dtype=np.float32)[ranked[chosen, rank]]
        x_adv = attack.generate(x[chosen], target)
        robust[chosen] = np.argmax(model.predict(x_adv, batch_size=batch_size), axis=1) == y[chosen]
    return robust


def square_robust(
    keras_model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    queries: int,
    norm: str = "linf",
    batch_size: int = 250,
    seed: int = 0,
) -> np.ndarray:
    """Which samples stay correct under ART's Square Attack with `queries` iterations."""
    evasion, _ = _art()
    model = classifier(keras_model)
    attack = evasion.SquareAttack(
        model, norm=_norm(norm), max_iter=queries, eps=eps, p_init=0.8, nb_restarts=1, batch_size=batch_size,
        verbose=False,
    )  # fmt: skip
    np.random.seed(seed)
    with np.errstate(divide="ignore", invalid="ignore"):  # ART's L2 rescaling divides by empty windows
        x_adv = attack.generate(x, np.eye(10, dtype=np.float32)[y])
    robust: np.ndarray = np.argmax(model.predict(x_adv, batch_size=batch_size), axis=1) == y
    return robust
