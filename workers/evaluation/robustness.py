"""From per-sample attack outcomes to the report's figures: robust accuracy, worst case, per class, cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from service.domain.results import AttackCost, AttackResult, Perturbation, StageResult, WorstCaseResult
from service.domain.specs import AttackSpecBase, AutoAttackSpec, PGDSpec
from service.domain.stats import wilson_interval


@dataclass
class StageWork:
    """One ensemble stage's work at one eps (per batch, then summed): samples it ran on and broke, passes."""

    attacked: int = 0
    broken: int = 0
    forward: int = 0
    backward: int = 0
    queries: int = 0
    seconds: float = 0.0
    last_restart_broken: int = 0  # broken by the stage's last restart, when it has several

    FIELDS: ClassVar[tuple[str, ...]] = (
        "attacked",
        "broken",
        "forward",
        "backward",
        "queries",
        "last_restart_broken",
    )

    def add(self, other: StageWork) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds


@dataclass
class AttackRun:
    """One attack at one eps over the whole evaluation: per-sample arrays plus the work it took.

    An ensemble's run also holds its stages' work and, per sample, `broken_by`: 1 + the index of the
    stage that broke it, 0 when none did, -1 when it was broken at the attack's smaller eps already
    (`cumulative` runs attack only the survivors of that one).
    """

    spec: AttackSpecBase
    index: int
    eps: float
    adv_pred: np.ndarray
    fooled: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    attacked: np.ndarray
    goal: np.ndarray
    forward: int
    backward: int
    seconds: float
    queries: int | None = None  # None: one per forward pass
    stages: list[StageWork] | None = None
    broken_by: np.ndarray | None = None
    cumulative: bool = False
    last_restart_broken: int = 0  # samples only the last of several restarts fooled (not an ensemble's)
    # A minimum-norm attack's one run (eps is inf): each sample's smallest adversarial norm, 0 for samples
    # wrong when clean, inf where none was found. Its eps rows are derived (evaluation/minimum_norm.py).
    norms: np.ndarray | None = None


def _robust(run: AttackRun, clean_correct: np.ndarray) -> np.ndarray:
    robust: np.ndarray = clean_correct & ~run.fooled
    return robust


def attack_result(run: AttackRun, y: np.ndarray, clean_correct: np.ndarray, num_classes: int) -> AttackResult:
    n = y.size
    robust = _robust(run, clean_correct)
    attacked = run.attacked
    spec = run.spec.model_dump(mode="json")
    spec["eps"] = run.eps
    if isinstance(run.spec, PGDSpec):
        spec["step_size"] = run.spec.step_size_for(run.eps)
    correct = int(clean_correct.sum())
    return AttackResult(
        name=run.spec.name,
        norm=run.spec.norm,
        eps=run.eps,
        spec=spec,
        robust_accuracy=float(robust.mean()),
        robust_accuracy_ci95=wilson_interval(int(robust.sum()), n),
        attack_success_rate=float(run.fooled[clean_correct].sum() / correct) if correct else 0.0,
        num_attacked=int(attacked.sum()),
        mean_perturbation=Perturbation(
            linf=float(run.linf[attacked].mean()) if attacked.any() else 0.0,
            l2=float(run.l2[attacked].mean()) if attacked.any() else 0.0,
        ),
        per_class_robust_accuracy=per_class(robust, y, num_classes),
        seconds=run.seconds,
        samples_per_second=n / run.seconds if run.seconds > 0 else 0.0,
        cost=cost(run.forward, run.backward, n, queries=run.queries),
        stages=stage_results(run, clean_correct) if run.stages is not None else None,
        cumulative=run.cumulative,
    )


def stage_specs(run: AttackRun) -> list[AttackSpecBase]:
    """The stage specs of an ensemble's run, in order (none for a plain attack)."""
    return run.spec.stages() if isinstance(run.spec, AutoAttackSpec) else []


def stage_results(run: AttackRun, clean_correct: np.ndarray) -> list[StageResult]:
    """Per stage of an ensemble run: robust accuracy after it (and every earlier one), its work."""
    assert run.stages is not None and run.broken_by is not None
    specs = stage_specs(run)
    n = clean_correct.size
    robust = clean_correct & (run.broken_by != -1)
    results = []
    for index, (stage, work) in enumerate(zip(specs, run.stages, strict=True)):
        robust = robust & (run.broken_by != index + 1)
        fields = stage.model_dump(mode="json")
        fields["eps"] = run.eps
        results.append(
            StageResult(
                name=stage.label(),
                spec=fields,
                num_attacked=work.attacked,
                robust_accuracy=float(robust.mean()) if n else 0.0,
                broken=work.broken,
                seconds=work.seconds,
                cost=cost(work.forward, work.backward, n, queries=work.queries),
            )
        )
    return results


def worst_case(
    runs: list[AttackRun], y: np.ndarray, clean_correct: np.ndarray, num_classes: int
) -> tuple[list[WorstCaseResult], dict[str, np.ndarray]]:
    """Per (norm, eps): a sample is robust only if every attack at that norm and eps failed on it."""
    keys = sorted({(run.spec.norm, run.eps) for run in runs})
    worst, arrays = [], {}
    for norm, eps in keys:
        group = [run for run in runs if (run.spec.norm, run.eps) == (norm, eps)]
        robust = clean_correct.copy()
        for run in group:
            robust &= ~run.fooled
        arrays[f"worst_robust_{norm}_{eps:g}"] = robust
        worst.append(
            WorstCaseResult(
                norm=norm,
                eps=eps,
                attacks=[run.spec.name for run in group],
                robust_accuracy=float(robust.mean()),
                robust_accuracy_ci95=wilson_interval(int(robust.sum()), int(robust.size)),
                per_class_robust_accuracy=per_class(robust, y, num_classes),
            )
        )
    return worst, arrays


def per_class(hits: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, float]:
    """Mean of `hits` per class, for the classes present in `y`."""
    return {str(c): float(hits[y == c].mean()) for c in range(num_classes) if np.any(y == c)}


def cost(forward: int, backward: int, n: int, *, queries: int | None = None) -> AttackCost:
    return AttackCost(
        forward_passes=forward,
        backward_passes=backward,
        forward_per_sample=forward / n if n else 0.0,
        backward_per_sample=backward / n if n else 0.0,
        queries=queries,
    )
