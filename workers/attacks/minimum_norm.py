"""The base of the minimum-norm attacks (`cw`, `fmn`): one search per batch finds each sample's smallest
adversarial, independent of any eps.

A minimum-norm attack is still an `Attack`: called with an eps it answers the bounded question with its
smallest adversarial projected into the eps ball (adversarial exactly when that one lies inside it), so
the contract, the ensembles and the tools that take any attack keep working. The evaluation calls
`minimize` instead, once per batch, and derives every eps's row from the norms.

A subclass writes `_program`: the traced graphs of its search and a Python driver that runs them and
answers each sample's best point, whether one was found, and the steps (forward+backward passes) it took.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from workers.attacks.base import Attack, AttackNotApplicable, CompiledAttack, Logits, RunOutput
from workers.attacks.losses import margin
from workers.attacks.norms import Norm
from workers.models.loading import LoadedModel

# What a search answers for a batch: best point (x where none), found, steps per sample.
SearchOutput = tuple[np.ndarray, np.ndarray, np.ndarray]


def gain(logits: tf.Tensor, goal: tf.Tensor) -> tf.Tensor:
    """How far past the boundary each sample is: max_{j != y} z_j - z_y (positive when fooled)."""
    return margin(tf.cast(logits, tf.float32), goal)


@dataclass(frozen=True)
class SearchProgram:
    """A search's traced graphs and its driver `run(x, goal, check) -> (best_x, found, steps)`."""

    run: Callable[[np.ndarray, np.ndarray, Callable[[], None] | None], SearchOutput]
    graphs: Sequence[Any]


@dataclass(frozen=True)
class CompiledMinimumNorm(CompiledAttack):
    """The search plus a scoring graph at an eps (the bounded answer) and one without (the minimal one)."""

    search: SearchProgram
    score_free: Any


@dataclass(frozen=True)
class MinimumNormOutput:
    """The smallest adversarial of each sample of a batch.

    `norms` is the distance of `x_adv` from the input in the attack's norm (float64), inf where the search
    found no adversarial; `x_adv` is then the input itself. `success` and `pred` come from a last forward
    pass on `x_adv`, so every finite norm belongs to a point the model misclassifies.
    """

    x_adv: np.ndarray
    norms: np.ndarray
    pred: np.ndarray
    success: np.ndarray
    forward_passes: int
    backward_passes: int


def distances(x_adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    """Per-sample distance in float64 (what the result reports)."""
    delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(x.shape[0], -1)
    if norm == "linf":
        return np.abs(delta).max(axis=1, initial=0.0)  # type: ignore[no-any-return]
    if norm == "l1":
        return np.abs(delta).sum(axis=1)  # type: ignore[no-any-return]
    return np.sqrt(np.square(delta).sum(axis=1))  # type: ignore[no-any-return]


class MinimumNormAttack(Attack):
    """An untargeted attack that searches each sample's smallest adversarial (see the module doc)."""

    def __init__(self, *, norm: str | Norm) -> None:
        super().__init__(norm=norm, loss="cw")

    @abstractmethod
    def _program(self, model: LoadedModel, bounds: tuple[float, float]) -> SearchProgram:
        """The search's graphs for this model and input range, and the driver that runs them."""

    def perturb(
        self,
        logits: Logits,
        x: tf.Tensor,
        goal: tf.Tensor,
        *,
        eps: tf.Tensor,
        step_size: tf.Tensor,
        seed: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tf.Tensor:
        raise NotImplementedError(f"{self.name} runs through its compiled search only")

    def _build(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        program = self._program(model, bounds)
        batch = tf.TensorSpec((None, *model.input_shape), tf.float32)
        labels = tf.TensorSpec((None,), tf.int64)

        def bounded(x: tf.Tensor, goal: tf.Tensor, x_adv: tf.Tensor, eps: tf.Tensor) -> Any:
            return self.score(model.logits, x, x_adv, goal, eps, bounds)

        def free(x_adv: tf.Tensor, goal: tf.Tensor) -> Any:
            z = tf.cast(model.logits(x_adv), tf.float32)
            return tf.argmax(z, axis=-1, output_type=tf.int64), gain(z, goal) > 0

        score_at = tf.function(
            bounded, input_signature=[batch, labels, batch, tf.TensorSpec((), tf.float32)], autograph=False
        )
        score_free = tf.function(free, input_signature=[batch, labels], autograph=False)

        def run(
            x: np.ndarray,
            goal: np.ndarray,
            eps: np.float32,
            step_size: np.float32,
            seed: np.ndarray,
            check: Callable[[], None] | None = None,
        ) -> RunOutput:
            best, _, steps = program.run(x, goal, check)
            x_adv, pred, success, obj = (t.numpy() for t in score_at(x, goal, best, eps))
            return x_adv, pred, success, obj, steps + 1, steps

        return CompiledMinimumNorm(run, [*program.graphs, score_at, score_free], program, score_free)

    def minimize(
        self,
        model: LoadedModel,
        x: np.ndarray,
        y: np.ndarray,
        *,
        input_range: tuple[float, float] = (0.0, 1.0),
        check: Callable[[], None] | None = None,
    ) -> MinimumNormOutput:
        """Each sample's smallest adversarial found, its norm, and the passes the search made.

        Raises:
            AttackNotApplicable: the attack cannot run on this model (see `unsupported`).
        """
        problem = self.unsupported(model.num_classes)
        if problem is not None:
            raise AttackNotApplicable(problem)
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        compiled = self.compiled(model, input_range)
        assert isinstance(compiled, CompiledMinimumNorm)
        best, found, steps = compiled.search.run(x, y, check)
        pred, success = (t.numpy() for t in compiled.score_free(best, y))
        # Only what the last pass confirms counts: a point on the boundary may round the other way.
        success = success & found
        x_adv = np.where(success.reshape(-1, *[1] * (x.ndim - 1)), best, x)
        norms = np.where(success, distances(x_adv, x, self.norm.name), np.inf)
        pred = np.where(success, pred, y)
        total = int(steps.sum())
        return MinimumNormOutput(x_adv, norms, pred, success, total + x.shape[0], total)
