"""Square Attack on a real trained CNN: no gradient at all, the published p schedule, early exit, strength
against IBM ART's SquareAttack."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from service.domain.datasets import ArrayDataset
from tests.unit.workers.attacks import art_peer
from workers.attacks import APGDCE, AttackNotApplicable, Square
from workers.models.loading import LoadedModel, from_keras

N = 100


class GradientTaken(RuntimeError):
    pass


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn)


@pytest.fixture(scope="module")
def batch(mnist_test: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    return mnist_test.x[:N], mnist_test.y[:N]


def without_gradient(model: LoadedModel) -> LoadedModel:
    """The model, whose gradient raises as soon as anything asks for it (even while tracing)."""
    inner = model.logits

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def guarded(x: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tf.Tensor:
            raise GradientTaken("the gradient of the model was asked for")

        return tf.identity(x), grad

    return replace(model, logits=lambda x: inner(guarded(x)), cache={})


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 2.0)])
def test_square_never_asks_for_a_gradient(
    norm: str, eps: float, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = batch
    guarded = without_gradient(model)
    with pytest.raises(GradientTaken):  # the guard works: a gradient attack trips it
        APGDCE(steps=2, norm=norm)(guarded, x[:4], y[:4], eps=eps)
    out = Square(n_queries=200, norm=norm)(guarded, x, y, eps=eps, seed=0)
    clean = np.argmax(model.logits(x).numpy(), axis=1) == y
    assert out.backward_passes == 0 and out.queries == out.forward_passes
    assert (clean & (out.pred == y)).mean() < clean.mean() - 0.05  # and it attacks


def test_window_side_follows_the_published_schedule() -> None:
    square = Square(n_queries=10_000, p_init=0.8)
    # 28 x 28: p = 0.8 until query 10, then halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
    sides = {i: int(square.side(tf.constant(i), 28, 28, 1).numpy()) for i in (0, 10, 11, 51, 201, 9999)}
    halvings = (0, 0, 1, 2, 3, 9)
    expected = {i: max(round(np.sqrt(0.8 / 2**k * 784)), 1) for i, k in zip(sides, halvings, strict=True)}
    assert sides == expected
    # The schedule is relative to the query budget (rescaled to 10,000 queries).
    short = Square(n_queries=1000)
    for i in (1, 2, 6, 21, 51, 101, 201, 401, 601, 801):
        assert (
            short.side(tf.constant(i), 28, 28, 1).numpy()
            == square.side(tf.constant(10 * i), 28, 28, 1).numpy()
        )


def test_fooled_samples_stop_querying(model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = batch
    out = Square(n_queries=150)(model, x, y, eps=0.15, seed=2)
    full = Square(n_queries=150, early_stop=False)(model, x, y, eps=0.15, seed=2)
    assert full.forward_passes == N * 151
    # Dropping fooled samples changes the survivors' random draws (they are drawn per batch), so only
    # the rate, not each sample, stays the same.
    assert abs(out.success.mean() - full.success.mean()) <= 0.05
    assert out.success.sum() >= 10 and out.forward_passes < full.forward_passes
    # A failed sample returns its best candidate: its margin never falls below the start point's.
    start = Square(n_queries=1)(model, x, y, eps=0.15, seed=2)
    failed = ~full.success & ~start.success
    assert failed.any() and np.all(full.objective[failed] >= start.objective[failed] - 1e-5)


def test_square_needs_images() -> None:
    import keras

    flat = from_keras(keras.Sequential([keras.Input((20,)), keras.layers.Dense(3)]))
    with pytest.raises(AttackNotApplicable, match="image inputs"):
        Square(n_queries=5)(flat, np.zeros((2, 20), np.float32), np.zeros(2, np.int64), eps=0.1)


def reference_pattern(side: int) -> np.ndarray:
    """The paper's L2 window: concentric rings of weight 1/(k+1)^2 summed, + on the top half, - below."""

    def rings(height: int, width: int) -> np.ndarray:
        value = np.zeros((height, width))
        for k in range(max(height // 2, width // 2) + 1):  # ring k: within k of the centre
            top, left = height // 2 - k, width // 2 - k
            value[max(top, 0) : top + 2 * k + 1, max(left, 0) : left + 2 * k + 1] += 1.0 / (k + 1) ** 2
        return value / np.sqrt(np.square(value).sum())

    value = np.concatenate([rings(side // 2, side), -rings(side - side // 2, side)])
    return value / np.sqrt(np.square(value).sum())  # type: ignore[no-any-return]


@pytest.mark.parametrize("side", [3, 5, 7, 9])
def test_l2_window_pattern_is_the_papers(side: int) -> None:
    from workers.attacks.square import _local, _pattern

    canvas = tf.zeros((2, 12, 12, 1))
    rows, cols = _local(canvas, tf.constant([2, 0]), tf.constant([1, 3]))
    pattern = _pattern(rows, cols, tf.constant(side), tf.constant([False, True]), 12).numpy()
    expected = reference_pattern(side)
    np.testing.assert_allclose(pattern[0, 2 : 2 + side, 1 : 1 + side], expected, atol=1e-6)
    np.testing.assert_allclose(pattern[1, :side, 3 : 3 + side], expected.T, atol=1e-6)  # flipped
    assert np.count_nonzero(pattern[0]) == np.count_nonzero(expected)  # nothing outside the window


@pytest.mark.slow
def test_square_linf_is_at_least_as_strong_as_arts(
    mnist_cnn: Any, model: LoadedModel, batch: tuple[np.ndarray, np.ndarray]
) -> None:
    # L-inf only: ART's L2 update is not the paper's (it divides the new window by its mass budget
    # instead of scaling it to the budget), and on this model it happens to be stronger at few queries.
    x, y = batch
    clean = np.argmax(model.logits(x).numpy(), axis=1) == y
    ours = (clean & (Square(n_queries=300)(model, x, y, eps=0.1, seed=0).pred == y)).mean()
    theirs = (clean & art_peer.square_robust(mnist_cnn, x, y, eps=0.1, queries=300)).mean()
    # Two random searches with their own random streams: 0.04 apart on one session's model (2026-12-02).
    assert ours <= theirs + 0.05, f"ours {ours:.3f} vs ART {theirs:.3f}"
