"""The norm objects: projection, ascent direction, random start and distance, checked numerically."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from workers.attacks.norms import L1, L2, NORMS, Linf, Norm, norm_for

SHAPE = (16, 6, 6, 1)


def reference_l1_projection(v: np.ndarray, eps: float) -> np.ndarray:
    """Euclidean projection onto the L1 ball by bisection on the soft threshold (independent of sorting)."""
    if np.abs(v).sum() <= eps:
        return v
    lo, hi = 0.0, float(np.abs(v).max())
    for _ in range(200):
        theta = (lo + hi) / 2
        lo, hi = (theta, hi) if np.maximum(np.abs(v) - theta, 0).sum() > eps else (lo, theta)
    return np.sign(v) * np.maximum(np.abs(v) - hi, 0)  # type: ignore[no-any-return]


def test_l1_projection_matches_the_bisection_reference_and_keeps_inside_points() -> None:
    rng = np.random.default_rng(0)
    delta = rng.normal(size=SHAPE).astype(np.float32) * rng.uniform(0.01, 1, size=(SHAPE[0], 1, 1, 1))
    delta = delta.astype(np.float32)
    eps = 3.0
    projected = L1().project_ball(tf.constant(delta), tf.constant(eps)).numpy()
    for got, v in zip(projected, delta, strict=True):
        np.testing.assert_allclose(
            got.ravel(), reference_l1_projection(v.ravel().astype(np.float64), eps), atol=1e-5
        )
    sizes = np.abs(delta.reshape(SHAPE[0], -1)).sum(axis=1)
    assert (sizes <= eps).any() and (sizes > eps).any()  # both cases are exercised
    np.testing.assert_array_equal(projected[sizes <= eps], delta[sizes <= eps])
    assert np.abs(projected.reshape(SHAPE[0], -1)).sum(axis=1).max() <= eps * (1 + 1e-5)
    zero = L1().project_ball(tf.constant(delta), tf.constant(0.0)).numpy()
    np.testing.assert_array_equal(zero, np.zeros_like(delta))


@pytest.mark.parametrize("norm", list(NORMS.values()), ids=lambda n: n.name)
def test_project_lands_in_ball_and_range_and_is_idempotent(norm: Norm) -> None:
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(size=SHAPE).astype(np.float32))
    x_adv = x + tf.constant(rng.normal(size=SHAPE).astype(np.float32))
    eps = tf.constant(0.7)
    once = norm.project(x_adv, x, eps, 0.0, 1.0)
    assert float(tf.reduce_max(norm.distance(once - x))) <= 0.7 * (1 + 1e-5)
    assert float(tf.reduce_min(once)) >= 0.0 and float(tf.reduce_max(once)) <= 1.0
    np.testing.assert_allclose(norm.project(once, x, eps, 0.0, 1.0).numpy(), once.numpy(), atol=1e-6)


@pytest.mark.parametrize("norm", list(NORMS.values()), ids=lambda n: n.name)
def test_ascent_direction_has_unit_norm_and_ascends(norm: Norm) -> None:
    grad = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype(np.float32))
    direction = norm.ascent_direction(grad)
    if not isinstance(norm, Linf):  # the sign has L-inf norm 1 by construction
        np.testing.assert_allclose(norm.distance(direction).numpy(), 1.0, rtol=1e-5)
    assert np.all(tf.reduce_sum(tf.reshape(grad * direction, [SHAPE[0], -1]), axis=1).numpy() > 0)


def test_l1_direction_moves_only_the_top_coordinates() -> None:
    grad = tf.constant(np.random.default_rng(3).normal(size=SHAPE).astype(np.float32))
    direction = L1(sparsity=0.1).ascent_direction(grad).numpy().reshape(SHAPE[0], -1)
    k = int(np.ceil(0.1 * 36))
    assert np.all((direction != 0).sum(axis=1) == k)
    top = np.argsort(-np.abs(grad.numpy().reshape(SHAPE[0], -1)), axis=1)[:, :k]
    assert np.all(np.take_along_axis(direction, top, axis=1) != 0)


@pytest.mark.parametrize("norm", list(NORMS.values()), ids=lambda n: n.name)
def test_random_start_is_inside_the_ball_and_seeded(norm: Norm) -> None:
    x = tf.zeros(SHAPE)
    seed = tf.constant([4, 5], tf.int64)
    start = norm.random_start(x, tf.constant(0.5), seed)
    assert float(tf.reduce_max(norm.distance(start))) <= 0.5 * (1 + 1e-5)
    assert float(tf.reduce_min(norm.distance(start))) > 0
    np.testing.assert_array_equal(start.numpy(), norm.random_start(x, tf.constant(0.5), seed).numpy())


def test_norms_are_found_by_name() -> None:
    assert (
        isinstance(norm_for("linf"), Linf)
        and isinstance(norm_for("l2"), L2)
        and isinstance(norm_for("l1"), L1)
    )
    with pytest.raises(ValueError, match="known norms"):
        norm_for("l0")
