"""Square Attack: a score-based black box that needs the model's outputs only (Andriushchenko et al., 2020).

It runs on the iterative base with `uses_gradient = False`: each step is one forward pass (one query per
sample) at a candidate; the base keeps the candidate when it raises the margin loss (the best point) and
stops a sample at its first misclassified candidate; `advance` draws the next candidate around the best
point. No gradient is ever taken, so it also runs on models whose gradient is useless or unavailable.

Unlike the reference implementations, which draw one square position per batch, every sample draws its
own position each step (the same cost, and samples do not share their luck). Draws are made per batch,
so when fooled samples leave it the survivors' random stream changes (as in the references, which index
the survivors): the result is reproducible by seed, and early exit changes the draws, not their law.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from service.domain.specs import QUERIES_PER_GRADIENT_STEP, AttackSpecBase, SquareSpec
from workers.attacks.base import AttackNotApplicable, CompiledAttack, expect_spec
from workers.attacks.iterative import Extras, IterativeAttack, IterState
from workers.attacks.norms import Norm
from workers.models.loading import LoadedModel

# The published schedule of p (rescaled to 10,000 queries): p halves after each of these query counts.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12
# Draws of one step, each from its own stateless seed.
_ROW, _COL, _ROW2, _COL2, _SIGN, _FLIP = range(6)


def _draw(seed: tf.Tensor, index: tf.Tensor, kind: int) -> tf.Tensor:
    key = tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))
    return tf.random.experimental.stateless_fold_in(key, kind)


class Square(IterativeAttack):
    """Square Attack (Andriushchenko et al., 2020, "Square Attack: a query-efficient black-box adversarial
    attack via random search"), in L-inf or L2, on images (height, width, channels).

    It starts from vertical stripes of +-eps (L-inf) or a grid of +-square patterns on the eps sphere
    (L2), then at each query changes one random square window of side about sqrt(p * height * width):
    L-inf sets it to a random +-eps per channel; L2 moves mass into it from a second window, keeping the
    perturbation on the sphere. p starts at `p_init` and halves on the paper's schedule. A candidate is
    kept when it raises the margin max_{j != y} z_j - z_y. Forward passes only.

    Args:
        n_queries: queries per sample and restart (AutoAttack: 5000), the start point included.
        p_init: initial fraction of the image a window covers (0.8).
        restarts: independent runs; each sample keeps its worst case.
        norm: "linf" or "l2".
        early_stop: drop fooled samples between chunks (same result, less work).
    """

    name = "square"
    uses_gradient = False

    def __init__(
        self,
        *,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        norm: str | Norm = "linf",
        early_stop: bool = True,
    ) -> None:
        super().__init__(
            steps=n_queries, random_start=True, restarts=restarts, loss="cw", norm=norm,
            early_stop=early_stop,
        )  # fmt: skip
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], not {p_init}")
        if self.norm.name not in _PROPOSALS:
            raise ValueError(f"square runs in {' or '.join(_PROPOSALS)}, not {self.norm.name}")
        self.p_init = p_init
        self._proposal = _PROPOSALS[self.norm.name]

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> Square:
        spec = expect_spec(spec, SquareSpec)
        return cls(n_queries=spec.n_queries, p_init=spec.p_init, restarts=spec.restarts, norm=spec.norm)

    @property
    def gradient_steps(self) -> int:
        # Work in forward+backward units, the engine's progress and the job cap's (see SquareSpec).
        return math.ceil(self.steps / QUERIES_PER_GRADIENT_STEP)

    def config(self) -> tuple[object, ...]:
        return (*super().config(), self.p_init)

    def _build(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        if len(model.input_shape) != 3:
            raise AttackNotApplicable(
                f"square needs image inputs (height, width, channels) but the model takes shape "
                f"{tuple(model.input_shape)}; use a gradient attack"
            )
        return super()._build(model, bounds)

    def side(self, index: tf.Tensor, height: int, width: int, smallest: int) -> tf.Tensor:
        """The window side at query `index`: sqrt(p * pixels), p halved on the schedule."""
        it = tf.floor(tf.cast(index, tf.float32) / self.steps * 10_000.0)
        halvings = tf.reduce_sum(tf.cast(it > tf.constant(_HALVINGS, tf.float32), tf.float32))
        p = self.p_init / tf.pow(2.0, halvings)
        side = tf.maximum(tf.cast(tf.round(tf.sqrt(p * height * width)), tf.int32), smallest)
        return side

    def start_point(
        self, x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor, bounds: tuple[float, float]
    ) -> tf.Tensor:
        return self._proposal.start(x, eps, seed)

    def advance(self, state: IterState, grad: tf.Tensor | None) -> tuple[tf.Tensor, Extras]:
        return self._proposal.propose(self, state), state.extra


def _window(origin_row: tf.Tensor, origin_col: tf.Tensor, side: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """(B, H, W, 1) masks of each sample's square window of `side` at its origin."""
    height, width = x.shape[1], x.shape[2]
    rows = tf.range(height)[None, :, None] - origin_row[:, None, None]
    cols = tf.range(width)[None, None, :] - origin_col[:, None, None]
    inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    return tf.cast(inside, x.dtype)[..., None]


def _origins(state: IterState, side: tf.Tensor, row_kind: int, col_kind: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Uniform window origins per sample, so the window fits the image."""
    x = state.x
    n = tf.shape(x)[:1]
    out = []
    for kind, extent in ((row_kind, x.shape[1]), (col_kind, x.shape[2])):
        u = tf.random.stateless_uniform(n, _draw(state.seed, state.index, kind))
        span = tf.cast(extent - side + 1, tf.float32)
        out.append(tf.minimum(tf.cast(tf.floor(u * span), tf.int32), extent - side))
    return out[0], out[1]


def _signs(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.sign(tf.random.stateless_uniform(shape, seed, minval=-1.0, maxval=1.0))


class _LinfProposal:
    """L-inf: stripes to start; a window set to a random +-eps per channel."""

    @staticmethod
    def start(x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        shape = tf.stack([tf.shape(x)[0], 1, x.shape[2], x.shape[3]])
        return x + eps * _signs(shape, seed)

    @staticmethod
    def propose(attack: Square, state: IterState) -> tf.Tensor:
        x = state.x
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        side = tf.minimum(attack.side(state.index, height, width, 1), min(height, width))
        row, col = _origins(state, side, _ROW, _COL)
        signs = _signs(tf.stack([tf.shape(x)[0], 1, 1, channels]), _draw(state.seed, state.index, _SIGN))
        # 2 eps from a point of the ball lands on its face once projected: the window becomes x +- eps.
        return state.best_x + 2.0 * state.eps * signs * _window(row, col, side, x)


# H(n) = sum_{k < n} 1 / (k + 1)^2, for the L2 pattern (a window's side is at most the image's).
def _harmonic_squares(size: int) -> tf.Tensor:
    terms = 1.0 / np.square(np.arange(1, size + 1, dtype=np.float64))
    return tf.constant(np.concatenate([[0.0], np.cumsum(terms)]), tf.float32)


def _rectangle(
    rows: tf.Tensor, cols: tf.Tensor, height: tf.Tensor, width: tf.Tensor, limit: int
) -> tf.Tensor:
    """Concentric squares of weight sum_{k >= ring} 1/(k+1)^2 over a height x width rectangle, unit L2.

    `rows` and `cols` are coordinates relative to the rectangle's corner (broadcast to (B, H, W));
    `limit` bounds the rectangle's sides (the image's larger side).
    """
    ring = tf.maximum(tf.abs(rows - height // 2), tf.abs(cols - width // 2))
    rings = tf.maximum(height // 2, width // 2) + 1
    table = _harmonic_squares(limit + 2)
    value = tf.gather(table, rings) - tf.gather(table, tf.minimum(ring, rings))
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    value = tf.where(inside, value, tf.zeros_like(value))
    size = tf.sqrt(tf.reduce_sum(tf.square(value), axis=[1, 2], keepdims=True))
    return value / tf.maximum(size, _TINY)


def _pattern(rows: tf.Tensor, cols: tf.Tensor, side: tf.Tensor, flip: tf.Tensor, limit: int) -> tf.Tensor:
    """The paper's L2 window pattern: +squares on the top half, -squares on the bottom, unit L2 norm,
    transposed where `flip`; (B, H, W)."""

    def upright(r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
        half = side // 2
        return _rectangle(r, c, half, side, limit) - _rectangle(r - half, c, side - half, side, limit)

    value = tf.where(flip[:, None, None], upright(cols, rows), upright(rows, cols))
    size = tf.sqrt(tf.reduce_sum(tf.square(value), axis=[1, 2], keepdims=True))
    return value / tf.maximum(size, _TINY)


def _local(x: tf.Tensor, row: tf.Tensor, col: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Coordinates relative to each sample's window origin: (B, H, 1) and (B, 1, W)."""
    rows = tf.range(x.shape[1])[None, :, None] - row[:, None, None]
    cols = tf.range(x.shape[2])[None, None, :] - col[:, None, None]
    return rows, cols


def _l2(t: tf.Tensor, axis: list[int]) -> tf.Tensor:
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axis, keepdims=True))


class _L2Proposal:
    """L2: a grid of patterns to start; mass moved from a second window into a new pattern."""

    @staticmethod
    def start(x: tf.Tensor, eps: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        n = tf.shape(x)[0]
        side = max(height // 5, 1)
        offset = (height - 5 * side) // 2 if height >= 5 * side else 0
        delta = tf.zeros_like(x)
        cell = 0
        for top in range(offset, offset + side * (height // side), side):
            for left in range(offset, offset + side * (width // side), side):
                if top + side > height or left + side > width:
                    continue
                key = tf.random.experimental.stateless_fold_in(seed, cell)
                flip = tf.random.stateless_uniform(tf.reshape(n, [1]), key) < 0.5
                rows, cols = _local(x, tf.fill([n], top), tf.fill([n], left))
                pattern = _pattern(rows, cols, tf.constant(side), flip, max(height, width))[..., None]
                signs = _signs(tf.stack([n, 1, 1, channels]), key + 1)
                delta += pattern * signs
                cell += 1
        return x + delta / tf.maximum(_l2(delta, [1, 2, 3]), _TINY) * eps

    @staticmethod
    def propose(attack: Square, state: IterState) -> tf.Tensor:
        x, eps = state.x, state.eps
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        n = tf.shape(x)[0]
        side = attack.side(state.index, height, width, 3)
        side = tf.minimum(side + (1 - side % 2), min(height, width))  # odd, so the pattern has a centre
        row, col = _origins(state, side, _ROW, _COL)
        row2, col2 = _origins(state, side, _ROW2, _COL2)
        window, window2 = _window(row, col, side, x), _window(row2, col2, side, x)
        delta = state.best_x - x
        mass_here = _l2(delta * window, [1, 2])  # per channel
        total = _l2(delta, [1, 2, 3])
        mass_both = _l2(delta * tf.maximum(window, window2), [1, 2])
        flip = tf.random.stateless_uniform(tf.reshape(n, [1]), _draw(state.seed, state.index, _FLIP)) < 0.5
        rows, cols = _local(x, row, col)
        signs = _signs(tf.stack([n, 1, 1, channels]), _draw(state.seed, state.index, _SIGN))
        new = _pattern(rows, cols, side, flip, max(height, width))[..., None] * signs + delta * window / (
            mass_here + _TINY
        )
        # The window gets the mass of both windows plus whatever the sphere has left, per channel.
        budget = tf.sqrt(tf.maximum(tf.square(eps) - tf.square(total), 0.0) / channels + tf.square(mass_both))
        new = new / (_l2(new, [1, 2]) + _TINY) * budget
        delta = delta * (1.0 - window2) * (1.0 - window) + new
        return x + delta / tf.maximum(_l2(delta, [1, 2, 3]), _TINY) * eps


_PROPOSALS: dict[str, type[_LinfProposal] | type[_L2Proposal]] = {"linf": _LinfProposal, "l2": _L2Proposal}
