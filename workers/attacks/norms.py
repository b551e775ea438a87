"""Perturbation norms as objects: projection, ascent direction, random start and distance per norm.

Attacks hold a `Norm` and never branch on its name. Every method is graph code on a batch (B, ...), with
`eps` a scalar tensor; random draws are stateless with an explicit seed, because `tf.random.set_seed`
would clear TensorFlow's cache of traced functions (DESIGN.md).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

# A point already in an L2 or L1 ball is left untouched, so projecting twice never moves it.
_SLACK = 1e-6
_TINY = 1e-12
# Halvings of the bracket in `boundary_step`: float32 has 24 bits of mantissa.
BISECTIONS = 26


def per_sample(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshape (B,) so it broadcasts against a (B, ...) batch."""
    return tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))


def _flat(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, [tf.shape(t)[0], -1])


class Norm(ABC):
    """One perturbation norm: what "within eps" means and which way is steepest in it."""

    name: ClassVar[str]

    def key(self) -> tuple[Any, ...]:
        """Everything that changes the graphs this norm builds (part of an attack's cache key)."""
        return (self.name,)

    @abstractmethod
    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        """The norm of each sample's perturbation, shape (B,)."""

    @abstractmethod
    def project_ball(self, delta: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """The perturbation moved into the eps ball (samples already inside are returned unchanged).

        `eps` is a scalar or one radius per sample, shape (B,) (the minimum-norm attacks' shrinking balls).
        """

    @abstractmethod
    def dual_distance(self, grad: tf.Tensor) -> tf.Tensor:
        """The dual norm of each sample's gradient: a linear function's change per unit step in this norm."""

    @abstractmethod
    def ascent_direction(self, grad: tf.Tensor) -> tf.Tensor:
        """A direction of unit norm that increases the loss fastest to first order."""

    @abstractmethod
    def random_start(self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """A perturbation drawn uniformly from the eps ball, reproducible from `seed` (shape (2,))."""

    def boundary_rate(self, weight: tf.Tensor) -> tf.Tensor:
        """How fast each coordinate grows along this norm's cheapest way to raise w·d (see `boundary_step`).

        The minimal-norm d with w·d = r in a box moves coordinate i by min(lambda * rate_i, room_i) in the
        direction of sign(w_i): rate 1 in L-inf (all free coordinates move equally), |w_i| in L2.
        """
        raise NotImplementedError(f"the {self.name} norm has no boundary projection")

    def boundary_step(self, t: tf.Tensor, w: tf.Tensor, r: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
        """The smallest d (in this norm) with w·d = r and t + d in [lo, hi], per sample (FAB's projection).

        Coordinate i moves by min(lambda * rate_i, room_i) towards the side that raises w·d, which then
        grows piecewise linearly and monotonically with lambda. Bisection on lambda finds which coordinates
        saturate (BISECTIONS halvings reach float resolution) and the segment's linear equation then gives
        lambda exactly; elementwise work only, where sorting the saturation points cost several times more
        on CPU. When even the whole box cannot reach |r|, every coordinate moves as far as it can.
        """
        shape = tf.shape(t)
        t, w = _flat(t), _flat(w)
        v = w * tf.sign(r)[:, None]  # now v·d must reach |r| >= 0
        need = tf.abs(r)[:, None]
        magnitude = tf.abs(v)
        room = tf.where(v > 0, hi - t, t - lo) * tf.cast(magnitude > 0, t.dtype)
        rate = self.boundary_rate(magnitude)
        movable = rate > 0
        breakpoint = tf.where(movable, room / tf.where(movable, rate, 1.0), tf.zeros_like(room))
        saturated, linear = magnitude * room, magnitude * rate

        def reach(lam: tf.Tensor) -> tf.Tensor:  # w·d at lambda: |v_i| min(lambda rate_i, room_i), summed
            return tf.reduce_sum(tf.minimum(lam * linear, saturated), axis=1, keepdims=True)

        low = tf.zeros_like(need)
        high = tf.reduce_max(breakpoint, axis=1, keepdims=True)
        for _ in range(BISECTIONS):  # unrolled: a few cheap elementwise ops each
            middle = 0.5 * (low + high)
            short = reach(middle) < need
            low, high = tf.where(short, middle, low), tf.where(short, high, middle)
        # Saturated at the bracket's top: those whose breakpoint lies below it; the rest still grow.
        done = breakpoint < high
        fixed = tf.reduce_sum(tf.where(done, saturated, 0.0), axis=1, keepdims=True)
        growing = tf.reduce_sum(tf.where(done, 0.0, linear), axis=1, keepdims=True)
        lam = (need - fixed) / tf.maximum(growing, _TINY)
        lam = tf.where(reach(high) < need, tf.fill(tf.shape(lam), tf.constant(np.inf, t.dtype)), lam)
        d = tf.sign(v) * tf.minimum(lam * rate, room)
        return tf.reshape(d, shape)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor, eps: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
        """Into the eps ball around `x`, then into the input range [lo, hi].

        Clipping to the range only shrinks each coordinate's perturbation, so the result stays in the ball
        of every norm here.
        """
        return tf.clip_by_value(x + self.project_ball(x_adv - x, eps), lo, hi)


class Linf(Norm):
    """The L-inf norm: the largest coordinate change."""

    name = "linf"

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(tf.abs(_flat(delta)), axis=1)

    def project_ball(self, delta: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        radius = tf.reshape(eps, [-1] + [1] * (len(delta.shape) - 1))
        return tf.clip_by_value(delta, -radius, radius)

    def dual_distance(self, grad: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.abs(_flat(grad)), axis=1)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor, eps: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
        # One clip against the intersection of the box and the ball: idempotent and exact at eps = 0.
        lower = tf.maximum(x - eps, lo)
        upper = tf.minimum(x + eps, hi)
        return tf.minimum(tf.maximum(x_adv, lower), upper)

    def ascent_direction(self, grad: tf.Tensor) -> tf.Tensor:
        return tf.sign(grad)

    def boundary_rate(self, weight: tf.Tensor) -> tf.Tensor:
        return tf.ones_like(weight)

    def random_start(self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(tf.shape(x), seed, minval=-1.0, maxval=1.0) * eps


class L2(Norm):
    """The Euclidean norm."""

    name = "l2"

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        return tf.sqrt(tf.reduce_sum(tf.square(_flat(delta)), axis=1))

    def project_ball(self, delta: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        size = self.distance(delta)
        factor = tf.minimum(1.0, eps / tf.maximum(size, _TINY))
        # Inside the ball up to a relative 1e-6: bit for bit unchanged, so re-projecting an attack's
        # output cannot change its prediction.
        outside = per_sample(size > eps * (1.0 + _SLACK), delta)
        return tf.where(outside, delta * per_sample(factor, delta), delta)

    def dual_distance(self, grad: tf.Tensor) -> tf.Tensor:
        return self.distance(grad)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor, eps: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
        # Samples inside the ball keep x_adv itself rather than x + (x_adv - x), which may round differently.
        delta = x_adv - x
        size = self.distance(delta)
        factor = tf.minimum(1.0, eps / tf.maximum(size, _TINY))
        outside = per_sample(size > eps * (1.0 + _SLACK), x)
        scaled = tf.where(outside, x + delta * per_sample(factor, x), x_adv)
        return tf.clip_by_value(scaled, lo, hi)

    def ascent_direction(self, grad: tf.Tensor) -> tf.Tensor:
        return grad / per_sample(tf.maximum(self.distance(grad), _TINY), grad)

    def boundary_rate(self, weight: tf.Tensor) -> tf.Tensor:
        return weight

    def random_start(self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        # Uniform in the ball: a uniform direction, radius eps * u^(1/d).
        shape = tf.shape(x)
        direction = tf.random.stateless_normal(shape, seed)
        direction = direction / per_sample(tf.maximum(self.distance(direction), _TINY), x)
        dims = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
        u = tf.random.stateless_uniform(shape[:1], seed + 1)
        return direction * per_sample(eps * tf.pow(u, 1.0 / dims), x)


class L1(Norm):
    """The L1 norm, with a sparse steepest-ascent direction.

    The L1 steepest ascent moves only the largest gradient coordinate; spreading the step over the top
    `sparsity` fraction of coordinates (signs of the top-k, as in the L1 attacks of Croce & Hein) moves
    several pixels per step without leaving the L1 geometry. Projection onto the ball is the sorting
    method of Duchi et al. (2008), vectorised over the batch; the box clip that follows keeps it feasible.

    Args:
        sparsity: fraction of the coordinates one step moves (at least one).
    """

    name = "l1"

    def __init__(self, sparsity: float = 0.01) -> None:
        if not 0 < sparsity <= 1:
            raise ValueError(f"sparsity must be in (0, 1], not {sparsity}")
        self.sparsity = sparsity

    def key(self) -> tuple[Any, ...]:
        return (self.name, self.sparsity)

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.abs(_flat(delta)), axis=1)

    def project_ball(self, delta: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        flat = _flat(delta)
        magnitude = tf.abs(flat)
        size = tf.reduce_sum(magnitude, axis=1)
        radius = tf.reshape(eps, [-1, 1])  # (1, 1) for one eps, (B, 1) for one per sample
        # Soft-threshold by theta, the smallest value that brings the L1 norm down to eps.
        ordered = tf.sort(magnitude, axis=1, direction="DESCENDING")
        cumulative = tf.cumsum(ordered, axis=1)
        ranks = tf.cast(tf.range(1, tf.shape(flat)[1] + 1), flat.dtype)
        positive = ordered - (cumulative - radius) / ranks > 0
        # rho = number of coordinates left non-zero (at least 1, which also makes eps = 0 give zero).
        rho = tf.maximum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), 1)
        kept_sum = tf.gather(cumulative, rho - 1, batch_dims=1)
        theta = tf.maximum((kept_sum - radius[:, 0]) / tf.cast(rho, flat.dtype), 0.0)
        shrunk = tf.sign(flat) * tf.maximum(magnitude - theta[:, None], 0.0)
        outside = (size > radius[:, 0] * (1.0 + _SLACK))[:, None]
        return tf.reshape(tf.where(outside, shrunk, flat), tf.shape(delta))

    def dual_distance(self, grad: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(tf.abs(_flat(grad)), axis=1)

    def ascent_direction(self, grad: tf.Tensor) -> tf.Tensor:
        flat = _flat(grad)
        dims = flat.shape[1]
        k = max(1, math.ceil(self.sparsity * dims)) if dims is not None else 1
        magnitude = tf.abs(flat)
        kth = tf.math.top_k(magnitude, k=k).values[:, -1:]
        chosen = tf.cast(tf.logical_and(magnitude >= kth, magnitude > 0), flat.dtype)
        # Ties can select more than k coordinates: dividing by the count keeps the L1 norm at 1.
        count = tf.maximum(tf.reduce_sum(chosen, axis=1, keepdims=True), 1.0)
        return tf.reshape(tf.sign(flat) * chosen / count, tf.shape(grad))

    def random_start(self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        # Uniform in the L1 ball: d+1 exponentials normalised by their sum (a flat Dirichlet) give the
        # magnitudes of the first d coordinates, with independent random signs.
        flat = _flat(x)
        n, d = tf.shape(flat)[0], tf.shape(flat)[1]
        u = tf.random.stateless_uniform(tf.stack([n, d + 1]), seed, minval=_TINY, maxval=1.0)
        exponential = -tf.math.log(u)
        magnitude = exponential[:, :d] / tf.reduce_sum(exponential, axis=1, keepdims=True)
        signs = tf.sign(tf.random.stateless_uniform(tf.stack([n, d]), seed + 1, minval=-1.0, maxval=1.0))
        return tf.reshape(signs * magnitude * eps, tf.shape(x))


NORMS: dict[str, Norm] = {norm.name: norm for norm in (Linf(), L2(), L1())}


def norm_for(name: str) -> Norm:
    """The norm object of a spec's `norm` field."""
    try:
        return NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; known norms: {', '.join(NORMS)}") from None
