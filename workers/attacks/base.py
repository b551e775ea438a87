"""The attack base class with its compiled entry point, plus by-name norm helpers for the training code.

An attack's loop runs in `tf.function` graphs with the steps unrolled in Python (iterative attacks:
chunks of 10 steps; see iterative.py): measured on this machine that sits at the cost floor, while
`tf.while_loop` was unstable and XLA about 3x slower. The graphs are traced once per (model, attack
configuration, input range) and kept in `LoadedModel.cache`. Eps, step size and seed are tensor
arguments and the batch dimension is `None`, so new eps values, a short last batch or a batch with
dropped samples never retrace. Random starts use stateless ops with explicit seeds: `tf.random.set_seed`
would clear TensorFlow's function cache.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, final

import numpy as np
import tensorflow as tf

from service.domain.specs import AttackSpecBase
from workers.attacks.losses import LossName, is_success, objective
from workers.attacks.norms import Norm, norm_for
from workers.models.loading import LoadedModel

Logits = Callable[[tf.Tensor], tf.Tensor]
# What a compiled run answers: x_adv, pred, success, objective, forward and backward passes per sample.
RunOutput = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class AttackNotApplicable(ValueError):
    """The attack cannot run on this model (e.g. the DLR loss on fewer than three classes); one sentence."""


@dataclass(frozen=True)
class CompiledAttack:
    """The traced graphs of one attack for one model and input range.

    `run(x, goal, eps, step_size, seed, check=None)` returns (x_adv, pred, success, objective, forward,
    backward) as arrays, `forward` and `backward` being the passes each sample went through, its scoring
    pass included (a black-box attack makes no backward pass). `check`, when given, is called between the
    graphs of an attack that runs several (the chunks of an iterative attack).
    """

    run: Callable[..., RunOutput]
    graphs: Sequence[Any]

    def tracing_count(self) -> int:
        return sum(int(g.experimental_get_tracing_count()) for g in self.graphs)


@dataclass(frozen=True)
class AttackOutput:
    """What an attack did to one batch.

    `pred` and `success` come from a forward pass on `x_adv` itself; `objective` is the attack's loss there
    (higher is worse for the model). Passes and queries are summed over samples and restarts; a query is
    one sample's forward pass through the model (gradient attacks: equal to `forward_passes`).
    `last_restart_broken` counts the samples only the last of several restarts fooled: when it is not
    small, robust accuracy was still falling (the masking diagnostics report it).
    """

    x_adv: np.ndarray
    pred: np.ndarray
    success: np.ndarray
    objective: np.ndarray
    goal: np.ndarray  # the label (untargeted) or the target class (targeted) of each sample
    forward_passes: int
    backward_passes: int
    queries: int
    last_restart_broken: int = 0


# The helpers below take the norm by name; the training methods (workers/training/methods.py) use them.
def per_sample_norm(delta: tf.Tensor, norm: str) -> tf.Tensor:
    return norm_for(norm).distance(delta)


def project(x_adv: tf.Tensor, x: tf.Tensor, eps: tf.Tensor, norm: str, lo: float, hi: float) -> tf.Tensor:
    return norm_for(norm).project(x_adv, x, eps, lo, hi)


def ascent_direction(grad: tf.Tensor, norm: str) -> tf.Tensor:
    return norm_for(norm).ascent_direction(grad)


def random_start(x: tf.Tensor, eps: tf.Tensor, norm: str, seed: tf.Tensor) -> tf.Tensor:
    return norm_for(norm).random_start(x, eps, seed)


def derive_seed(*path: int) -> np.ndarray:
    """A stateless-op seed from a path of integers (evaluation seed, batch, restart, ...).

    Hashing the whole path makes restart r of a batch the same whatever the number of restarts.
    """
    state = np.random.SeedSequence([int(p) for p in path]).generate_state(2, np.uint32)
    return state.astype(np.int64)


def random_targets(labels: np.ndarray, num_classes: int, seed: Sequence[int]) -> np.ndarray:
    """A seeded random class other than each label."""
    rng = np.random.default_rng([int(s) for s in seed])
    shift = rng.integers(1, num_classes, size=labels.shape[0]) if num_classes > 1 else 0
    return ((labels + shift) % num_classes).astype(np.int64)


S = TypeVar("S", bound=AttackSpecBase)


def expect_spec(spec: AttackSpecBase, kind: type[S]) -> S:
    """`spec` as the spec type an attack reads; a mismatch is a programming error of the registry."""
    if not isinstance(spec, kind):
        raise TypeError(f"expected a {kind.__name__}, got a {type(spec).__name__}")
    return spec


class Attack(ABC):
    """An evasion attack: a pure function of (model, x, y, eps, seed) to adversarial inputs.

    Subclasses write `from_spec` and `perturb`, graph code that may overshoot the budget (iterative
    attacks subclass `IterativeAttack` and write a step instead). The final `__call__` projects into the
    eps ball and the input range, scores the result with one forward pass, and runs restarts, keeping each
    sample's worst case (a success beats a failure; among failures, the higher loss) and dropping samples
    that already succeeded.

    Args:
        norm: "linf", "l2" or "l1", or a `Norm` object.
        targeted: push towards a target class instead of away from the label.
        target: the target class; None picks a seeded random class other than the label.
        loss: "ce" (cross-entropy), "cw" (logit margin) or "dlr" (Croce & Hein's ratio).
    """

    name: ClassVar[str]

    def __init__(
        self,
        *,
        norm: str | Norm = "linf",
        targeted: bool = False,
        target: int | None = None,
        loss: LossName = "ce",
    ) -> None:
        self.norm = norm_for(norm) if isinstance(norm, str) else norm
        self.targeted, self.target, self.loss = targeted, target, loss

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: AttackSpecBase) -> Attack:
        """The attack a validated spec describes (eps is an argument of each call, not part of it)."""

    def unsupported(self, num_classes: int) -> str | None:
        """Why this attack cannot run on a model with `num_classes` outputs, or None when it can."""
        if self.loss == "dlr" and num_classes < 3:
            return (
                f"the DLR loss of {self.name} needs at least 3 classes (it divides by the gap between the "
                f"first and third logits) but the model has {num_classes}; use a cross-entropy attack"
            )
        return None

    # --- what a subclass provides -------------------------------------------------------------------
    @abstractmethod
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
        """Graph code: the adversarial batch for `x` (it may leave the eps ball; `__call__` projects)."""

    @property
    @abstractmethod
    def gradient_steps(self) -> int:
        """Forward+backward passes `perturb` makes per sample."""

    @property
    def restarts(self) -> int:
        return 1

    def max_passes(self) -> tuple[int, int]:
        """(forward, backward) passes one sample can cost at most over the whole call, restarts included."""
        return (self.gradient_steps + 1) * self.restarts, self.gradient_steps * self.restarts

    def step_size_for(self, eps: float) -> float:
        return eps

    def config(self) -> tuple[Any, ...]:
        """Everything that changes the compiled graph (eps, step size and seed are tensors and do not)."""
        return (type(self).__name__, self.norm.key(), self.targeted, self.loss)

    # --- shared graph pieces --------------------------------------------------------------------------
    def objective(self, logits: tf.Tensor, goal: tf.Tensor) -> tf.Tensor:
        return objective(tf.cast(logits, tf.float32), goal, loss=self.loss, targeted=self.targeted)

    def value_and_gradient(
        self, logits: Logits, x: tf.Tensor, goal: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Logits at `x` and the gradient of the summed objective with respect to `x`."""
        z, _, grad = self.objective_and_gradient(logits, x, goal)
        return z, grad

    def objective_and_gradient(
        self,
        logits: Logits,
        x: tf.Tensor,
        goal: tf.Tensor,
        objective: Callable[[tf.Tensor], tf.Tensor] | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Logits, per-sample objective and the gradient of the summed objective, all at `x`.

        `objective` maps logits to the per-sample values to differentiate; default `self.objective`.
        """
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = tf.cast(logits(x), tf.float32)
            values = self.objective(z, goal) if objective is None else objective(z)
            total = tf.reduce_sum(values)
        grad = tape.gradient(total, x)
        if grad is None:  # the model is not differentiable in its input at all
            grad = tf.zeros_like(x)
        return z, values, grad

    def _cache_key(self, bounds: tuple[float, float]) -> tuple[Any, ...]:
        return ("attack", *self.config(), float(bounds[0]), float(bounds[1]))

    def is_compiled(self, model: LoadedModel, bounds: tuple[float, float]) -> bool:
        """Whether this model already holds the attack's graph (a warm worker)."""
        return self._cache_key(bounds) in model.cache

    def compiled(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        """The attack's graphs for this model, traced once and kept in `model.cache`."""
        key = self._cache_key(bounds)
        if key not in model.cache:
            model.cache[key] = self._build(model, (float(bounds[0]), float(bounds[1])))
        compiled: CompiledAttack = model.cache[key]
        return compiled

    def score(
        self,
        logits: Logits,
        x: tf.Tensor,
        x_adv: tf.Tensor,
        goal: tf.Tensor,
        eps: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Graph code: the final guarantee (eps ball and input range) and the scoring forward pass."""
        x_adv = self.norm.project(x_adv, x, eps, *bounds)
        z = tf.cast(logits(x_adv), tf.float32)
        pred = tf.argmax(z, axis=-1, output_type=tf.int64)
        return x_adv, pred, is_success(z, goal, targeted=self.targeted), self.objective(z, goal)

    def _build(self, model: LoadedModel, bounds: tuple[float, float]) -> CompiledAttack:
        signature = [
            tf.TensorSpec((None, *model.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32),
            tf.TensorSpec((2,), tf.int64),
        ]

        def graph(
            x: tf.Tensor, goal: tf.Tensor, eps: tf.Tensor, step_size: tf.Tensor, seed: tf.Tensor
        ) -> Any:
            x_adv = self.perturb(
                model.logits, x, goal, eps=eps, step_size=step_size, seed=seed, bounds=bounds
            )
            return self.score(model.logits, x, x_adv, goal, eps, bounds)

        # No autograph: the loop is plain Python, unrolled on purpose.
        compiled = tf.function(graph, input_signature=signature, autograph=False)

        def run(*args: Any, check: Callable[[], None] | None = None) -> RunOutput:
            x_adv, pred, success, obj = (t.numpy() for t in compiled(*args))
            steps = np.full(pred.shape, self.gradient_steps, np.int64)
            return x_adv, pred, success, obj, steps + 1, steps

        return CompiledAttack(run, [compiled])

    # --- the entry point ------------------------------------------------------------------------------
    @final
    def __call__(
        self,
        model: LoadedModel,
        x: np.ndarray,
        y: np.ndarray,
        *,
        eps: float,
        seed: int | Sequence[int] = 0,
        input_range: tuple[float, float] = (0.0, 1.0),
        targets: np.ndarray | None = None,
        check: Callable[[], None] | None = None,
    ) -> AttackOutput:
        """Attack the batch `x` with labels `y`; `x` must already be inside `input_range`.

        `targets` (targeted attacks only) overrides the spec's target or the seeded random choice.
        `check` is called between restarts (and between the graphs of a long PGD); it may raise to stop.

        Raises:
            AttackNotApplicable: the attack cannot run on this model (see `unsupported`).
        """
        problem = self.unsupported(model.num_classes)
        if problem is not None:
            raise AttackNotApplicable(problem)
        seed_path = (seed,) if isinstance(seed, int) else tuple(seed)
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        goal = self.goals(y, model.num_classes, seed_path, targets)
        n = x.shape[0]
        best_x, best_pred = x.copy(), np.zeros(n, np.int64)
        best_success, best_obj = np.zeros(n, bool), np.full(n, -np.inf, np.float32)
        forward = backward = 0
        run = self.compiled(model, input_range).run
        eps_t, step_t = np.float32(eps), np.float32(self.step_size_for(eps))
        active = np.arange(n)
        last_broken = 0
        for restart in range(self.restarts):
            if active.size == 0:
                break
            if check is not None and restart > 0:
                check()
            seed_r = derive_seed(*seed_path, restart)
            x_adv, pred, success, obj, passes_f, passes_b = run(
                x[active], goal[active], eps_t, step_t, seed_r, check=check
            )
            forward += int(passes_f.sum())
            backward += int(passes_b.sum())
            # Samples still active have only failed so far: a success or a higher loss replaces them.
            better = success | (obj > best_obj[active]) | (restart == 0)
            chosen = active[better]
            best_x[chosen], best_pred[chosen] = x_adv[better], pred[better]
            best_success[chosen], best_obj[chosen] = success[better], obj[better]
            active = active[~success]
            if restart == self.restarts - 1 and restart > 0:
                last_broken = int(success.sum())
        return AttackOutput(
            best_x, best_pred, best_success, best_obj, goal, forward, backward, forward, last_broken
        )

    def goals(
        self, y: np.ndarray, num_classes: int, seed: Sequence[int], targets: np.ndarray | None = None
    ) -> np.ndarray:
        """What each sample's attack aims at: its label, or its target class when targeted."""
        if not self.targeted:
            return y
        if targets is not None:
            return np.asarray(targets, dtype=np.int64)
        if self.target is not None:
            return np.full_like(y, self.target)
        return random_targets(y, num_classes, (*seed, 0x7A59))
