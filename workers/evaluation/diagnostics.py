"""Gradient-masking diagnostics across attacks, from their per-sample outcomes, each as one sentence.

Beyond sanity.py's checks on the figures: a single step leaving many samples that iterative attacks
break, a black-box attack breaking samples no white-box attack did, an ensemble stage still breaking
samples at its last restart, and a cross-entropy PGD alone disagreeing with the ensemble by more than
two points, and a bounded attack fooling samples at an eps where a minimum-norm attack found no smaller
adversarial. The counts inside each sentence are samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.domain.results import AttackResult
from service.domain.specs import PGDSpec
from workers.evaluation.robustness import AttackRun, stage_specs

# "Many" and "almost none", as fractions of the evaluated samples.
FGSM_MANY = 0.25
ITERATIVE_FEW = 0.05
# Black-box breaks and last-restart breaks above this fraction (and at least one sample) are reported.
FEW_SAMPLES = 0.005
# How far PGD-CE alone may sit above the ensemble before the report says so.
PGD_GAP = 0.02
BLACK_BOX = frozenset({"square"})
ITERATIVE = frozenset({"pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "autoattack"})
ENSEMBLE = "autoattack"


def masking_warnings(
    runs: Sequence[AttackRun], results: Sequence[AttackResult], clean_correct: np.ndarray
) -> list[str]:
    """Every diagnostic of this module on one evaluation (`results[i]` is the report row of `runs[i]`)."""
    n = clean_correct.size
    return [
        *single_step_leaves_many(results, n),
        *black_box_breaks_more(runs, clean_correct),
        *last_restart_still_breaks(runs, n),
        *pgd_alone_disagrees(runs, results, n),
    ]


def _few(n: int) -> float:
    return max(FEW_SAMPLES * n, 0.5)  # at least one sample


def single_step_leaves_many(results: Sequence[AttackResult], n: int) -> list[str]:
    """FGSM leaves many samples correct at an eps where an iterative attack leaves almost none."""
    warnings = []
    for fgsm in (r for r in results if r.name == "fgsm" and not r.spec.get("targeted")):
        rivals = [
            r
            for r in results
            if r.name in ITERATIVE and not r.spec.get("targeted") and (r.norm, r.eps) == (fgsm.norm, fgsm.eps)
        ]
        if not rivals:
            continue
        best = min(rivals, key=lambda r: r.robust_accuracy)
        if fgsm.robust_accuracy >= FGSM_MANY and best.robust_accuracy <= ITERATIVE_FEW:
            warnings.append(
                f"fgsm leaves {round(fgsm.robust_accuracy * n)} of {n} samples correct at {fgsm.norm} "
                f"eps={fgsm.eps:g} where {best.name} leaves {round(best.robust_accuracy * n)}: a single "
                "step failing where many succeed hints at gradient masking (a loss surface that is only "
                "flat near the clean input)"
            )
    return warnings


def black_box_breaks_more(runs: Sequence[AttackRun], clean_correct: np.ndarray) -> list[str]:
    """A black-box attack (or an ensemble's black-box stage) breaks samples no white-box attack broke."""
    n = clean_correct.size
    warnings = []
    for norm, eps in sorted({(run.spec.norm, run.eps) for run in runs}):
        black, white = np.zeros(n, bool), np.zeros(n, bool)
        names = []
        for run in (r for r in runs if (r.spec.norm, r.eps) == (norm, eps)):
            if run.spec.name in BLACK_BOX:
                black |= run.fooled
                names.append(run.spec.name)
            elif run.broken_by is not None and run.stages is not None:
                stages = [s.name for s in stage_specs(run)]
                by_black = np.isin(run.broken_by, [i + 1 for i, s in enumerate(stages) if s in BLACK_BOX])
                black |= by_black
                white |= run.fooled & ~by_black
                names += [s for s in stages if s in BLACK_BOX]
            else:
                white |= run.fooled
        only = int((black & ~white & clean_correct).sum())
        if names and only > _few(n):
            warnings.append(
                f"the black-box {names[0]} broke {only} of {n} samples at {norm} eps={eps:g} that every "
                "gradient attack left robust: the gradients mislead, which hints at gradient masking"
            )
    return warnings


def last_restart_still_breaks(runs: Sequence[AttackRun], n: int) -> list[str]:
    """An attack, or an ensemble stage, whose last restart still broke samples: robust accuracy had not
    settled."""
    warnings = []
    for run in runs:
        if run.stages is None:
            if run.last_restart_broken > _few(n):
                warnings.append(
                    f"at {run.spec.norm} eps={run.eps:g}, the last restart of {run.spec.label()} still broke "
                    f"{run.last_restart_broken} of {n} samples: robust accuracy was still falling, so more "
                    "restarts would likely find more"
                )
            continue
        for spec, work in zip(stage_specs(run), run.stages, strict=True):
            if work.last_restart_broken > _few(n):
                warnings.append(
                    f"in {ENSEMBLE} at {run.spec.norm} eps={run.eps:g}, the last restart of {spec.label()} "
                    f"still broke {work.last_restart_broken} of {n} samples: robust accuracy was still "
                    "falling, so more restarts would likely find more"
                )
    return warnings


def pgd_alone_disagrees(runs: Sequence[AttackRun], results: Sequence[AttackResult], n: int) -> list[str]:
    """What PGD-CE alone gives (the job's PGD-40 row, else the APGD-CE stage) against the ensemble."""
    warnings = []
    for run, result in zip(runs, results, strict=True):
        if run.spec.name != ENSEMBLE or not result.stages:
            continue
        reference = _pgd40(runs, results, run)
        if reference is None and result.stages[0].spec.get("name") == "apgd-ce":
            reference = (f"{result.stages[0].name} (its first stage)", result.stages[0].robust_accuracy)
        if reference is None:
            continue
        label, accuracy = reference
        gap = accuracy - result.robust_accuracy
        if gap > PGD_GAP:
            warnings.append(
                f"{label} alone gives {accuracy:.1%} robust accuracy at {run.spec.norm} eps={run.eps:g} but "
                f"{ENSEMBLE} {result.spec.get('version')} gives {result.robust_accuracy:.1%} "
                f"({round(gap * n)} of {n} samples more broken): a cross-entropy attack alone overstates "
                "robustness on this model; quote the autoattack figure"
            )
    return warnings


def _pgd40(
    runs: Sequence[AttackRun], results: Sequence[AttackResult], ensemble: AttackRun
) -> tuple[str, float] | None:
    for run, result in zip(runs, results, strict=True):
        spec = run.spec
        if (
            isinstance(spec, PGDSpec)
            and (spec.steps, spec.restarts, spec.loss, spec.targeted) == (40, 1, "ce", False)
            and (spec.norm, run.eps) == (ensemble.spec.norm, ensemble.eps)
        ):
            return "pgd-40 (cross-entropy)", result.robust_accuracy
    return None


def bounded_beats_minimum_norm(
    rows: Sequence[AttackRun], searches: Sequence[AttackRun], clean_correct: np.ndarray
) -> list[str]:
    """A bounded attack fooled samples at an eps where a minimum-norm attack found no adversarial that small.

    `rows` are the report's rows (a minimum-norm attack's own eps rows are skipped: they agree with it by
    construction); `searches` the minimum-norm runs with their per-sample norms.
    """
    n = clean_correct.size
    warnings = []
    for search in searches:
        assert search.norms is not None
        for row in rows:
            if row.spec.minimum_norm or row.spec.norm != search.spec.norm or row.spec.targeted:
                continue
            beaten = int((row.fooled & clean_correct & (search.norms > row.eps)).sum())
            if beaten > _few(n):
                warnings.append(
                    f"{row.spec.label()} found adversarials for {beaten} of {n} samples at {row.spec.norm} "
                    f"eps={row.eps:g} where {search.spec.label()} found none that small: the minimum-norm "
                    "search did not converge there, or its gradients mislead (gradient masking); give it "
                    "more steps before quoting its norms"
                )
    return warnings
