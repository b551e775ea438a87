"""Pure rules that tell a diverging training from a merely noisy one, and what to say about it.

A training diverges when its loss stops being a number or explodes, when the model's clean accuracy falls
to chance (it predicts one class), or when clean and robust accuracy collapse together. The uploaded model
(epoch 0) is measured by the same validation check as every epoch, so "better" and "worse" compare like
with like. Kept free of TensorFlow so the rules are unit-tested on plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A batch loss this many times the run's first one (and above the floor) has exploded: an adversarial
# loss grows a few times while eps ramps up, never by two orders of magnitude.
EXPLODE_FACTOR = 100.0
EXPLODE_FLOOR = 50.0
# Clean accuracy within this fraction of the way from chance (the largest class's share: what answering
# one class scores) to perfect is at chance; a model that predicts one or two classes lands there. The rule
# applies only to a model that started at least `STARTED_ABOVE` of the way up.
CHANCE_MARGIN = 0.1
STARTED_ABOVE = 0.3
# Both accuracies below half of their best and by at least 10 points: the model is broken, not noisy.
COLLAPSE_RATIO = 0.5
COLLAPSE_MIN_DROP = 0.1
# Adversarial training trades some clean accuracy for robustness; half the clean accuracy gone for less
# than this much robust accuracy gained is no trade.
ROBUST_GAIN = 0.05


@dataclass(frozen=True)
class Check:
    """Clean and robust accuracy on the validation check."""

    clean: float
    robust: float


def chance_level(labels: np.ndarray) -> float:
    """The accuracy of always answering the most common label."""
    if labels.size == 0:
        return 0.0
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def at_chance(clean: float, chance: float, margin: float = CHANCE_MARGIN) -> bool:
    return clean <= chance + margin * (1.0 - chance)


def fell_to_chance(clean: float, uploaded_clean: float, chance: float) -> bool:
    """Clean accuracy at chance for a model that was well above it when uploaded."""
    return at_chance(clean, chance) and not at_chance(uploaded_clean, chance, STARTED_ABOVE)


def loss_problem(loss: float, first: float | None) -> str | None:
    """Why this batch loss means divergence (NaN, infinite, exploded from `first`), else None."""
    if not math.isfinite(loss):
        return f"the training loss became {loss}"
    if first is not None and loss > max(EXPLODE_FACTOR * max(first, 0.0), EXPLODE_FLOOR):
        return f"the training loss exploded to {loss:.3g} (it was {first:.3g} at the start)"
    return None


def check_problem(check: Check, *, uploaded: Check, best: Check | None, chance: float) -> str | None:
    """Why this validation check means divergence, else None.

    `best` is the best epoch so far (the uploaded model included) by robust accuracy.
    """
    if fell_to_chance(check.clean, uploaded.clean, chance):
        return (
            f"clean accuracy fell to {check.clean:.1%}, chance level "
            f"(the uploaded model had {uploaded.clean:.1%})"
        )
    if _collapsed(check.clean, uploaded.clean) and check.robust <= uploaded.robust + ROBUST_GAIN:
        return (
            f"clean accuracy collapsed from {uploaded.clean:.1%} to {check.clean:.1%} "
            f"with no robustness gained (robust {uploaded.robust:.1%} to {check.robust:.1%})"
        )
    if best is not None and _collapsed(check.clean, best.clean) and _collapsed(check.robust, best.robust):
        return (
            f"clean and robust accuracy both collapsed (clean {best.clean:.1%} to {check.clean:.1%}, "
            f"robust {best.robust:.1%} to {check.robust:.1%})"
        )
    return None


def _collapsed(value: float, peak: float) -> bool:
    return value < COLLAPSE_RATIO * peak and peak - value >= COLLAPSE_MIN_DROP


def beats(check: Check, uploaded: Check) -> bool:
    """Whether an epoch is better than the uploaded model on the validation check: more robust."""
    return check.robust > uploaded.robust


def worse_on_both(check: Check, uploaded: Check) -> bool:
    return check.clean < uploaded.clean and check.robust < uploaded.robust


def hint(learning_rate: float, schedule: str) -> str:
    """The likely cause of a divergence, as advice."""
    advice = f"lower learning_rate (it was {learning_rate:g}; try {learning_rate / 10:g})"
    if schedule == "constant":
        advice += " or use lr_schedule 'onecycle'"
    return advice
