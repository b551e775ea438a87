"""Pure rules of a training run: eps ramp-up, learning-rate schedule, early stop, collapse detection.

Kept free of TensorFlow so they are unit-tested on synthetic histories.
"""

from __future__ import annotations

import math

from service.domain.specs import LearningRateSchedule

# Catastrophic overfitting (Wong et al.) takes PGD accuracy to near zero within an epoch; ordinary
# noise between epochs is a few points. A fall below half the best AND by at least 10 points is the former.
COLLAPSE_RATIO = 0.5
COLLAPSE_MIN_DROP = 0.1


def eps_at(step: int, *, eps: float, ramp_steps: int) -> float:
    """Training eps at global batch `step` (0-based): linear from eps/ramp_steps up to eps, then flat."""
    if ramp_steps <= 0 or step + 1 >= ramp_steps:
        return eps
    return eps * (step + 1) / ramp_steps


def learning_rate_at(step: int, *, base: float, total_steps: int, schedule: LearningRateSchedule) -> float:
    """Learning rate at global batch `step` (0-based) of `total_steps`.

    cosine: half a cosine from `base` down to 0. onecycle: linear from 0 up to `base` at 40% of the run,
    then linear down to 0 (the cyclic schedule Wong et al. pair with FGSM-RS).
    """
    if schedule == "constant" or total_steps <= 1:
        return base
    t = min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * t))
    peak = 0.4
    # The first step of a one-cycle run is not 0 (that step would be wasted).
    return base * (min(1.0, (step + 1) / (peak * total_steps)) if t < peak else (1.0 - t) / (1.0 - peak))


def best_epoch(robust: list[float]) -> int | None:
    """0-based index of the highest robust accuracy (the earliest on ties); None when empty."""
    if not robust:
        return None
    return max(range(len(robust)), key=lambda i: (robust[i], -i))


def collapse(
    robust: list[float], *, ratio: float = COLLAPSE_RATIO, min_drop: float = COLLAPSE_MIN_DROP
) -> int | None:
    """The epoch (0-based) to roll back to when the last robust accuracy collapsed, else None."""
    if len(robust) < 2:
        return None
    best = best_epoch(robust[:-1])
    assert best is not None
    peak, last = robust[best], robust[-1]
    return best if last < ratio * peak and peak - last >= min_drop else None


def patience_exhausted(robust: list[float], patience: int | None) -> bool:
    """Whether the last `patience` epochs brought no better robust accuracy than the best before them."""
    if patience is None or len(robust) <= patience:
        return False
    best = best_epoch(robust)
    assert best is not None
    return len(robust) - 1 - best >= patience
