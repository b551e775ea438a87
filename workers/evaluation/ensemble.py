"""AutoAttack as an ensemble: its stages in turn, each only on the samples every earlier stage left robust.

A stage is any registered attack, found by name (its spec comes from `AutoAttackSpec.stages()`, a version
being a list of stage specs). A sample is broken as soon as one stage misclassifies it, whatever that
stage aimed at (a targeted stage counts any wrong class), and no later stage sees it: the ensemble's
robust set is the per-sample AND of its stages at the cost of the survivors only (Croce & Hein, 2020).
A stage with several restarts runs them one by one on its own survivors, which also tells whether the
last restart still broke samples (not converged).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.domain.specs import AttackSpecBase, AutoAttackSpec
from workers.attacks import Attack, AttackNotApplicable, attack_from_spec
from workers.evaluation.robustness import StageWork
from workers.models.loading import LoadedModel

# Stage s of a batch uses the seed path (*batch seed, _STAGE_SEED, s, restart), apart from the batch's.
_STAGE_SEED = 0xAA


@dataclass
class EnsembleOutput:
    """What the ensemble did to one batch; the totals mirror `AttackOutput`'s names."""

    x_adv: np.ndarray
    pred: np.ndarray
    success: np.ndarray  # misclassified by some stage
    broken_by: np.ndarray  # 1 + the index of the stage that broke the sample, 0 when none did
    stages: list[StageWork]

    @property
    def forward_passes(self) -> int:
        return sum(s.forward for s in self.stages)

    @property
    def backward_passes(self) -> int:
        return sum(s.backward for s in self.stages)

    @property
    def queries(self) -> int:
        return sum(s.queries for s in self.stages)


def stage_seed(seed: Sequence[int], stage: int, restart: int) -> tuple[int, ...]:
    """The seed path of one restart of one stage, from the batch's seed path."""
    return (*seed, _STAGE_SEED, stage, restart)


class Ensemble:
    """Attacks run in turn on the survivors of the earlier ones (AutoAttack; Croce & Hein, 2020).

    It offers the parts of `Attack`'s interface the evaluation uses (`gradient_steps`, `restarts`,
    `unsupported`, `is_compiled`, `goals`, a call per batch), so the engine runs it like an attack.

    Args:
        stages: the stage specs, in order (their eps is ignored: each call gives it).
        restarts: per stage, its restarts; each is one call of a single-restart copy of the stage.
    """

    def __init__(self, stages: Sequence[AttackSpecBase]) -> None:
        if not stages:
            raise ValueError("an ensemble needs at least one stage")
        self.stage_specs = list(stages)
        self.restarts_of = [int(getattr(spec, "restarts", 1)) for spec in self.stage_specs]
        # One restart per call: the ensemble drops the samples a restart broke before the next one.
        self.attacks: list[Attack] = [
            attack_from_spec(spec.model_copy(update={"restarts": 1}) if r > 1 else spec)
            for spec, r in zip(self.stage_specs, self.restarts_of, strict=True)
        ]

    @classmethod
    def from_spec(cls, spec: AttackSpecBase) -> Ensemble:
        if not isinstance(spec, AutoAttackSpec):
            raise TypeError(f"expected an AutoAttackSpec, got a {type(spec).__name__}")
        return cls(spec.stages())

    @property
    def gradient_steps(self) -> int:
        """Passes per sample if no stage broke anything (every stage on every sample)."""
        return sum(
            a.gradient_steps * a.restarts * r for a, r in zip(self.attacks, self.restarts_of, strict=True)
        )

    @property
    def restarts(self) -> int:
        return 1

    def unsupported(self, num_classes: int) -> str | None:
        for attack in self.attacks:
            problem = attack.unsupported(num_classes)
            if problem is not None:
                return f"autoattack cannot run its stage {attack.name}: {problem}"
        return None

    def is_compiled(self, model: LoadedModel, bounds: tuple[float, float]) -> bool:
        return all(attack.is_compiled(model, bounds) for attack in self.attacks)

    def goals(
        self, y: np.ndarray, num_classes: int, seed: Sequence[int], targets: np.ndarray | None = None
    ) -> np.ndarray:
        return y  # untargeted: its targeted stages choose their own targets

    def warm_up(
        self, model: LoadedModel, x: np.ndarray, y: np.ndarray, *, eps: float, seed: Sequence[int],
        input_range: tuple[float, float],
    ) -> None:  # fmt: skip
        """Trace every stage on one sample (a plain call would stop at the first stage that breaks it)."""
        for index, attack in enumerate(self.attacks):
            if not attack.is_compiled(model, input_range):
                attack(model, x, y, eps=eps, seed=stage_seed(seed, index, 0), input_range=input_range)

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
    ) -> EnsembleOutput:
        """Run the stages on the batch `x` (labels `y`), each on what the earlier ones left robust.

        Raises:
            AttackNotApplicable: a stage cannot run on this model.
        """
        problem = self.unsupported(model.num_classes)
        if problem is not None:
            raise AttackNotApplicable(problem)
        path = (seed,) if isinstance(seed, int) else tuple(seed)
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        n = x.shape[0]
        x_adv, pred = x.copy(), y.copy()
        broken_by = np.zeros(n, np.int8)
        seen = np.zeros(n, bool)  # has an adversarial candidate (robust samples keep the first one)
        work = [StageWork() for _ in self.attacks]
        for index, (attack, restarts) in enumerate(zip(self.attacks, self.restarts_of, strict=True)):
            for restart in range(restarts):
                alive = np.flatnonzero(broken_by == 0)
                if alive.size == 0:
                    break
                if check is not None and (index or restart):
                    check()
                started = time.perf_counter()
                out = attack(
                    model, x[alive], y[alive], eps=eps, seed=stage_seed(path, index, restart),
                    input_range=input_range, check=check,
                )  # fmt: skip
                # Broken means misclassified, whatever class a targeted stage aimed at.
                hit = out.pred != y[alive]
                keep = hit | ~seen[alive]
                x_adv[alive[keep]], pred[alive[keep]] = out.x_adv[keep], out.pred[keep]
                seen[alive] = True
                broken_by[alive[hit]] = index + 1
                stage = work[index]
                stage.attacked += alive.size if restart == 0 else 0
                stage.broken += int(hit.sum())
                stage.forward += out.forward_passes
                stage.backward += out.backward_passes
                stage.queries += out.queries
                stage.seconds += time.perf_counter() - started
                if restart == restarts - 1 and restarts > 1:
                    stage.last_restart_broken += int(hit.sum())
        return EnsembleOutput(x_adv, pred, broken_by > 0, broken_by, work)


# Attacks made of attacks, by the name of their spec (service/domain/specs.py ENSEMBLE_NAMES).
ENSEMBLES: dict[str, Callable[[AttackSpecBase], Ensemble]] = {"autoattack": Ensemble.from_spec}
