"""Checks on an evaluation's numbers that flag signs of gradient masking, each as one sentence.

An attack that fails because the gradient is useless (zero, shattered, saturated) overstates robustness;
these are the symptoms listed by Athalye et al. (2018) and Carlini et al. (2019) that a report can see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.domain.results import AttackResult, WorstCaseResult

ZERO_GRADIENT_FRACTION = 0.10
LARGE_EPS_ACCURACY = 0.50


def eps_monotonicity(groups: Sequence[Sequence[AttackResult]], num_samples: int) -> list[str]:
    """Robust accuracy rising with eps (by more than one sample) for one attack spec."""
    warnings = []
    slack = 1.0 / max(num_samples, 1)
    for index, group in enumerate(groups):
        ordered = sorted(group, key=lambda r: r.eps)
        for low, high in zip(ordered, ordered[1:], strict=False):
            if high.robust_accuracy > low.robust_accuracy + slack:
                warnings.append(
                    f"robust accuracy under {low.name} {low.norm} (attack {index}) rises with eps, "
                    f"from {low.robust_accuracy:.1%} at eps={low.eps:g} to {high.robust_accuracy:.1%} "
                    f"at eps={high.eps:g}, which hints at gradient masking"
                )
                break
    return warnings


def single_step_beats_iterative(results: Sequence[AttackResult], num_samples: int) -> list[str]:
    """Untargeted FGSM leaving fewer samples correct than untargeted PGD at the same norm and eps."""
    slack = 1.0 / max(num_samples, 1)
    warnings = []
    seen: set[tuple[str, float]] = set()
    for fgsm in (r for r in results if r.name == "fgsm" and not r.spec.get("targeted")):
        pgds = [
            r
            for r in results
            if r.name == "pgd" and not r.spec.get("targeted") and (r.norm, r.eps) == (fgsm.norm, fgsm.eps)
        ]
        if not pgds or (fgsm.norm, fgsm.eps) in seen:
            continue
        best_pgd = min(r.robust_accuracy for r in pgds)
        if fgsm.robust_accuracy < best_pgd - slack:
            seen.add((fgsm.norm, fgsm.eps))
            warnings.append(
                f"fgsm beats pgd at {fgsm.norm} eps={fgsm.eps:g} (robust accuracy {fgsm.robust_accuracy:.1%} "
                f"vs {best_pgd:.1%}): one step should not beat many, which hints at gradient masking"
            )
    return warnings


def large_eps_not_reached(worst: Sequence[WorstCaseResult], span: float) -> list[str]:
    """Most samples still correct at an L-inf eps that can turn any image mid-grey."""
    linf = [w for w in worst if w.norm == "linf"]
    if not linf:
        return []
    largest = max(linf, key=lambda w: w.eps)
    if largest.eps >= span / 2 and largest.robust_accuracy > LARGE_EPS_ACCURACY:
        return [
            f"{largest.robust_accuracy:.1%} of samples stay correct at linf eps={largest.eps:g}, at least "
            "half the input range, where any image can be pushed to mid-grey: this hints at gradient masking"
        ]
    return []


def gradient_health(zero_gradient: np.ndarray, nonfinite_gradient: np.ndarray) -> list[str]:
    """Zero input gradients on many clean samples, or any NaN/Inf gradient."""
    warnings = []
    n = max(zero_gradient.size, 1)
    zero_fraction = float(zero_gradient.sum()) / n
    if zero_fraction > ZERO_GRADIENT_FRACTION:
        warnings.append(
            f"the input gradient of the cross-entropy loss is exactly zero on {zero_fraction:.1%} of clean "
            "samples, which hints at gradient masking (for example a non-differentiable preprocessing step)"
        )
    bad = int(nonfinite_gradient.sum())
    if bad:
        warnings.append(
            f"the input gradient of the cross-entropy loss is NaN or infinite on {bad} clean sample(s), "
            "which hints at gradient masking or a numerically unstable model"
        )
    return warnings


def eps_beyond_range(name: str, norm: str, eps: float, span: float) -> list[str]:
    """An L-inf eps larger than the whole input range: every in-range input is reachable."""
    if norm == "linf" and eps > span:
        return [
            f"eps={eps:g} for {name} is larger than the input range span {span:g}, so every input in range "
            "is reachable and the result says little about robustness"
        ]
    return []
