"""The three training objectives as graph code: an inner maximisation over the inputs, then the loss.

Everything here runs inside the trainer's compiled step. The inner loops are unrolled in Python, as in the
attack engine (measured at the cost floor, unlike `tf.while_loop`). The inner maximisation is computed
before the weight tape opens and its result is a constant for the outer gradient, so the tape records
only the final forward pass (two for TRADES).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from service.domain.specs import Norm, TrainingMethod
from workers.attacks.base import ascent_direction, project, random_start
from workers.attacks.losses import cross_entropy

Logits = Callable[[tf.Tensor], tf.Tensor]

# TRADES starts its inner maximisation this close to the clean input (Zhang et al. use 0.001 * N(0, 1)).
_TRADES_START = 1e-3


@dataclass(frozen=True)
class MethodConfig:
    """What changes the compiled training step (eps, step size and seeds are tensors and do not)."""

    method: TrainingMethod
    norm: Norm
    steps: int
    beta: float
    clean_fraction: float
    bounds: tuple[float, float]
    previous_start: bool = False  # fgsm-rs from each sample's last perturbation (`fgsm_start: previous`)

    @property
    def inner_steps(self) -> int:
        """Input-gradient computations per sample of the inner maximisation."""
        return 1 if self.method == "fgsm-rs" else self.steps

    @property
    def passes_per_sample(self) -> int:
        """Forward+backward passes per training sample: the inner steps plus the weight update(s)."""
        return self.inner_steps + (2 if self.method == "trades" else 1)


def _kl(p_logits: tf.Tensor, q_logits: tf.Tensor) -> tf.Tensor:
    """KL(softmax(p) || softmax(q)) per sample."""
    log_p = tf.nn.log_softmax(p_logits)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(q_logits)), axis=-1)


def _input_gradient(objective: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        total = tf.reduce_sum(objective(x))
    return tape.gradient(total, x)


def maximise_cross_entropy(
    logits: Logits,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    eps: tf.Tensor,
    step_size: tf.Tensor,
    seed: tf.Tensor,
    steps: int,
    norm: Norm,
    bounds: tuple[float, float],
    start: tf.Tensor | None = None,
) -> tf.Tensor:
    """PGD from a uniform random start (or from `x + start`), keeping the last iterate; one step is FGSM-RS.

    Unlike the evaluation PGD, which keeps the first misclassified iterate, training wants the point of
    highest loss the steps reach, as in Madry et al. and Wong et al.
    """
    lo, hi = bounds
    initial = random_start(x, eps, norm, seed) if start is None else start
    x_adv = project(x + initial, x, eps, norm, lo, hi)
    for _ in range(steps):
        grad = _input_gradient(lambda v: cross_entropy(tf.cast(logits(v), tf.float32), y), x_adv)
        x_adv = project(x_adv + step_size * ascent_direction(grad, norm), x, eps, norm, lo, hi)
    return tf.stop_gradient(x_adv)


def maximise_kl(
    logits: Logits,
    x: tf.Tensor,
    clean_logits: tf.Tensor,
    *,
    eps: tf.Tensor,
    step_size: tf.Tensor,
    seed: tf.Tensor,
    steps: int,
    norm: Norm,
    bounds: tuple[float, float],
) -> tf.Tensor:
    """TRADES's inner maximisation of KL(clean || adversarial) from a point next to the clean input."""
    lo, hi = bounds
    start = _TRADES_START * tf.random.stateless_normal(tf.shape(x), seed)
    x_adv = project(x + start, x, eps, norm, lo, hi)
    for _ in range(steps):
        grad = _input_gradient(lambda v: _kl(clean_logits, tf.cast(logits(v), tf.float32)), x_adv)
        x_adv = project(x_adv + step_size * ascent_direction(grad, norm), x, eps, norm, lo, hi)
    return tf.stop_gradient(x_adv)


def adversarial_inputs(
    config: MethodConfig,
    logits: Logits,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    eps: tf.Tensor,
    step_size: tf.Tensor,
    seed: tf.Tensor,
    previous: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    """The inputs the weights are trained on (pgd, fgsm-rs), or TRADES's adversarial twins of `x`.

    `previous` (fgsm-rs with `previous_start`): each sample's perturbation from the last epoch, and a
    boolean scalar saying whether there is one yet (False in the first epoch: start at random then).
    """
    common = {"eps": eps, "step_size": step_size, "seed": seed, "norm": config.norm, "bounds": config.bounds}
    if config.method == "trades":
        clean = tf.stop_gradient(tf.cast(logits(x), tf.float32))
        return maximise_kl(logits, x, clean, steps=config.steps, **common)
    if config.method == "fgsm-rs":
        start = None
        if previous is not None:
            perturbation, have_previous = previous
            start = tf.where(have_previous, perturbation, random_start(x, eps, config.norm, seed))
        return maximise_cross_entropy(logits, x, y, steps=1, start=start, **common)
    if config.clean_fraction <= 0:
        return maximise_cross_entropy(logits, x, y, steps=config.steps, **common)
    # The batch is shuffled, so its first samples are a random subset: they stay clean, unattacked.
    size = tf.cast(tf.shape(x)[0], tf.float32)
    keep = tf.cast(tf.round(config.clean_fraction * size), tf.int32)
    attacked = maximise_cross_entropy(logits, x[keep:], y[keep:], steps=config.steps, **common)
    return tf.concat([x[:keep], attacked], axis=0)


def training_loss(
    config: MethodConfig, logits: Logits, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The batch loss to minimise over the weights, and the logits of the adversarial inputs.

    pgd and fgsm-rs: cross-entropy on `x_adv`. trades: cross-entropy on `x` plus beta times
    KL(clean || adversarial), with gradients flowing through both sides as in Zhang et al.
    """
    z_adv = tf.cast(logits(x_adv), tf.float32)
    if config.method != "trades":
        return tf.reduce_mean(cross_entropy(z_adv, y)), z_adv
    z_clean = tf.cast(logits(x), tf.float32)
    loss = tf.reduce_mean(cross_entropy(z_clean, y)) + config.beta * tf.reduce_mean(_kl(z_clean, z_adv))
    return loss, z_adv
