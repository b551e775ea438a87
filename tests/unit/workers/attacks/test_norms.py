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


@pytest.mark.parametrize("norm", [Linf(), L2()], ids=["linf", "l2"])
def test_boundary_step_is_the_smallest_step_onto_the_hyperplane_within_the_box(norm: Norm) -> None:
    """FAB's projection against a solver: scipy's linear program (L-inf) or constrained least squares (L2)."""
    from scipy.optimize import linprog, minimize

    rng = np.random.default_rng(1)
    n, d = 12, 8
    t = rng.uniform(0, 1, size=(n, d)).astype(np.float32)
    w = rng.normal(size=(n, d)).astype(np.float32)
    w[0, :3] = 0.0  # coordinates the hyperplane ignores stay put
    r = rng.normal(scale=0.6, size=n).astype(np.float32)
    r[1] = 50.0  # out of the box's reach: every coordinate moves as far as it can
    step = norm.boundary_step(tf.constant(t), tf.constant(w), tf.constant(r), 0.0, 1.0).numpy()
    assert np.all(t + step >= -1e-6) and np.all(t + step <= 1 + 1e-6)
    assert np.all(step[0, :3] == 0)
    # How far w.d can go in r's direction within the box.
    reach = np.where(np.sign(r)[:, None] * w > 0, 1 - t, t) * np.abs(w)
    reach = reach.sum(axis=1)
    feasible = np.abs(r) <= reach
    assert feasible.sum() >= 6 and not feasible[1]
    for i in np.flatnonzero(~feasible):
        np.testing.assert_allclose(w[i] @ step[i], np.sign(r[i]) * reach[i], rtol=1e-5)
    for i in np.flatnonzero(feasible):
        np.testing.assert_allclose(w[i] @ step[i], r[i], atol=1e-5)
        box = [(-float(ti), 1 - float(ti)) for ti in t[i]]
        if isinstance(norm, Linf):
            # minimise s subject to w.d = r, -s <= d_j <= s, the box: variables (d, s).
            cost = np.r_[np.zeros(d), 1.0]
            upper = np.r_[np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]]
            solved = linprog(
                cost, A_ub=upper, b_ub=np.zeros(2 * d), A_eq=np.r_[w[i], 0.0][None], b_eq=[r[i]],
                bounds=[*box, (0, None)],
            )  # fmt: skip
            np.testing.assert_allclose(np.abs(step[i]).max(), solved.fun, rtol=1e-4, atol=1e-6)
        else:
            solved = minimize(
                lambda v: float(v @ v), np.zeros(d), jac=lambda v: 2 * v, bounds=box, method="SLSQP",
                constraints=[{"type": "eq", "fun": lambda v, i=i: float(w[i] @ v - r[i])}],
                options={"ftol": 1e-12, "maxiter": 500},
            )  # fmt: skip
            np.testing.assert_allclose(step[i], solved.x, atol=1e-4)
