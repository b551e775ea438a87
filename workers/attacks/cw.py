"""Carlini & Wagner's L2 attack (2017), compiled: every sample of a batch searches its own constant c.

Per search, the variables w live in tanh space (x_adv = lo + (hi - lo)(tanh w + 1)/2, always in range) and
Adam minimises ||x_adv - x||² + c · max(z_y - max_{j != y} z_j + kappa, 0), the paper's f6. After each
search every sample moves its own c (halving its bracket after a success, times 10 before the first one),
as vectors, so no Python loop runs per sample. Each step's iterate is checked before the update: the
smallest kappa-adversarial iterate of any search is the sample's answer.

The steps run in graphs of CHUNK_STEPS unrolled steps (the iterative attacks' layout, DESIGN.md). Early
abort, as in the paper but per sample: every tenth of the steps (rounded to chunks), a sample whose loss
has not fallen by 0.01% since the last check leaves the search, and the rest go on without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from service.domain.specs import AttackSpecBase, CWSpec
from workers.attacks.base import expect_spec
from workers.attacks.iterative import CHUNK_STEPS
from workers.attacks.minimum_norm import MinimumNormAttack, SearchOutput, SearchProgram, gain
from workers.attacks.norms import per_sample
from workers.models.loading import LoadedModel

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
# tanh never reaches ±1: the input is mapped to the open interval, as in Carlini's code.
_INSIDE = 0.999999
# c above this is "no upper bound yet" (Carlini's 1e10).
_UNBOUNDED = 1e10
# A loss above this fraction of the last check's counts as no longer falling.
_STALL = 0.9999

State = dict[str, tf.Tensor]


class CW(MinimumNormAttack):
    """Carlini & Wagner L2 (see the module doc).

    Args:
        binary_search_steps: searches over c per sample.
        steps: Adam steps per search.
        confidence: kappa, the logit margin a point needs to count as adversarial.
        learning_rate: Adam's step size.
        initial_const: c of the first search.
        abort_early: end a sample's search when its loss stops falling.
    """

    name = "cw"

    def __init__(
        self,
        *,
        binary_search_steps: int = 9,
        steps: int = 1000,
        confidence: float = 0.0,
        learning_rate: float = 0.01,
        initial_const: float = 1e-3,
        abort_early: bool = True,
    ) -> None:
        super().__init__(norm="l2")
        if binary_search_steps < 1 or steps < 1:
            raise ValueError("binary_search_steps and steps must be at least 1")
        self.binary_search_steps, self.steps = binary_search_steps, steps
        self.confidence, self.learning_rate = confidence, learning_rate
        self.initial_const, self.abort_early = initial_const, abort_early

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> CW:
        spec = expect_spec(spec, CWSpec)
        return cls(
            binary_search_steps=spec.binary_search_steps,
            steps=spec.steps,
            confidence=spec.confidence,
            learning_rate=spec.learning_rate,
            initial_const=spec.initial_const,
            abort_early=spec.abort_early,
        )

    @property
    def gradient_steps(self) -> int:
        return self.binary_search_steps * self.steps

    def config(self) -> tuple[Any, ...]:
        # The graphs depend on the chunking only; the other settings are tensors or driver arguments.
        return (*super().config(), self.steps, self.confidence, self.learning_rate)

    def _chunks(self) -> list[int]:
        length = min(CHUNK_STEPS, self.steps)
        return [length] * (self.steps // length) + ([self.steps % length] if self.steps % length else [])

    def _program(self, model: LoadedModel, bounds: tuple[float, float]) -> SearchProgram:
        lo, hi = bounds
        half = (hi - lo) / 2.0
        batch = tf.TensorSpec((None, *model.input_shape), tf.float32)
        vector = tf.TensorSpec((None,), tf.float32)
        flags = tf.TensorSpec((None,), tf.bool)
        labels = tf.TensorSpec((None,), tf.int64)
        state_signature = {
            "w": batch, "m": batch, "v": batch, "best_x": batch, "best_norm": vector, "found": flags,
            "loss": vector,
        }  # fmt: skip
        kappa, rate = float(self.confidence), float(self.learning_rate)

        def to_box(w: tf.Tensor) -> tf.Tensor:
            return lo + half * (tf.tanh(w) + 1.0)

        def start(x: tf.Tensor) -> tf.Tensor:
            return tf.atanh(tf.clip_by_value((x - lo) / half - 1.0, -_INSIDE, _INSIDE))

        def chunk_graph(steps: int) -> Any:
            def chunk(x: tf.Tensor, goal: tf.Tensor, c: tf.Tensor, state: State, first: tf.Tensor) -> State:
                state = dict(state)
                for offset in range(steps):  # unrolled, as the iterative attacks' chunks
                    w = state["w"]
                    with tf.GradientTape() as tape:
                        tape.watch(w)
                        x_adv = to_box(w)
                        distance = tf.reduce_sum(tf.square(tf.reshape(x_adv - x, [tf.shape(x)[0], -1])), 1)
                        past = gain(model.logits(x_adv), goal)
                        loss = distance + c * tf.maximum(kappa - past, 0.0)
                        total = tf.reduce_sum(loss)
                    grad = tape.gradient(total, w)
                    size = tf.sqrt(distance)
                    better = tf.logical_and(past > kappa, size < state["best_norm"])
                    t = tf.cast(first + offset + 1, tf.float32)
                    m = _BETA1 * state["m"] + (1.0 - _BETA1) * grad
                    v = _BETA2 * state["v"] + (1.0 - _BETA2) * tf.square(grad)
                    m_hat, v_hat = m / (1.0 - _BETA1**t), v / (1.0 - _BETA2**t)
                    state = {
                        "w": w - rate * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS),
                        "m": m,
                        "v": v,
                        "best_x": tf.where(per_sample(better, x), x_adv, state["best_x"]),
                        "best_norm": tf.where(better, size, state["best_norm"]),
                        "found": tf.logical_or(state["found"], past > kappa),
                        "loss": loss,
                    }
                return state

            signature = [batch, labels, vector, state_signature, tf.TensorSpec((), tf.int32)]
            return tf.function(chunk, input_signature=signature, autograph=False)

        start_fn = tf.function(start, input_signature=[batch], autograph=False)
        chunk_fns = {steps: chunk_graph(steps) for steps in sorted(set(self._chunks()))}

        def run(x: np.ndarray, goal: np.ndarray, check: Callable[[], None] | None) -> SearchOutput:
            return self._search(x, goal, start_fn, chunk_fns, check)

        return SearchProgram(run, [start_fn, *chunk_fns.values()])

    def _search(
        self,
        x: np.ndarray,
        goal: np.ndarray,
        start_fn: Any,
        chunk_fns: dict[int, Any],
        check: Callable[[], None] | None,
    ) -> SearchOutput:
        n = x.shape[0]
        best_x, best_norm = x.copy(), np.full(n, np.inf, np.float32)
        found = np.zeros(n, bool)
        steps_done = np.zeros(n, np.int64)
        c = np.full(n, self.initial_const, np.float32)
        lower, upper = np.zeros(n, np.float32), np.full(n, _UNBOUNDED, np.float32)
        w0 = start_fn(x).numpy()
        chunks = self._chunks()
        # Checks of the loss every tenth of the steps, at the chunk boundary at or after it.
        every = max(1, (self.steps // 10) // max(chunks[0], 1))
        for search in range(self.binary_search_steps):
            if search and check is not None:
                check()
            active = np.arange(n)
            zeros = np.zeros_like(x)
            state: State = {
                "w": tf.constant(w0), "m": tf.constant(zeros), "v": tf.constant(zeros),
                "best_x": tf.constant(best_x), "best_norm": tf.constant(best_norm),
                "found": tf.zeros(n, tf.bool), "loss": tf.fill([n], np.float32(np.inf)),
            }  # fmt: skip
            succeeded = np.zeros(n, bool)
            last = np.full(n, np.inf, np.float32)
            first = 0

            def keep(rows: np.ndarray, state: State, succeeded: np.ndarray = succeeded) -> None:
                best_x[rows] = state["best_x"].numpy()
                best_norm[rows] = state["best_norm"].numpy()
                succeeded[rows] = state["found"].numpy()

            for index, length in enumerate(chunks):
                if index and check is not None:
                    check()
                state = chunk_fns[length](x[active], goal[active], c[active], state, np.int32(first))
                steps_done[active] += length
                first += length
                if self.abort_early and (index + 1) % every == 0 and index + 1 < len(chunks):
                    loss = state["loss"].numpy()
                    stalled = loss > _STALL * last[active]
                    last[active] = loss
                    if stalled.any():
                        keep(active[stalled], {k: tf.boolean_mask(t, stalled) for k, t in state.items()})
                        going = ~stalled
                        active = active[going]
                        state = {k: tf.boolean_mask(t, going) for k, t in state.items()}
                        if active.size == 0:
                            break
            if active.size:
                keep(active, state)
            found |= succeeded
            # Each sample's bracket on c, as vectors: halve after a success, else raise (x10 while unbounded).
            upper = np.where(succeeded, np.minimum(upper, c), upper)
            lower = np.where(succeeded, lower, np.maximum(lower, c))
            bounded = upper < _UNBOUNDED
            c = np.where(bounded, (lower + upper) / 2, c * 10).astype(np.float32)
        return best_x, found & np.isfinite(best_norm), steps_done
