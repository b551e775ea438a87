"""The work cap of one job: gradient steps counted from the spec, checked before the job is queued.

A gradient step is one forward and backward pass for one sample; the cost of an attack and of a training
epoch is close to a whole number of them (DESIGN.md: PGD-k costs k passes). Counting them at submission
lets the API refuse, with a sentence, a job that would hold a worker for days, before anything runs;
the per-job time limit (`task_time_limit_s`) still stops whatever the count misjudges.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.domain.specs import (
    QUERIES_PER_GRADIENT_STEP,
    AttackSpecBase,
    CorruptionsSpec,
    TrainingOptions,
)
from service.errors import IncompatibleSpec

# A held-out validation split is this fraction of the training data (workers/training split_validation).
HELD_OUT_FRACTION = 0.1


def attack_steps(attack: AttackSpecBase) -> int:
    """Gradient steps per sample for one attack over all its eps values (each spec estimates its own)."""
    return attack.planned_steps()


def forward_steps(samples: int) -> int:
    """Forward passes (OOD scoring, corruptions) counted as gradient steps: one step is about three
    forward passes."""
    return -(-samples // QUERIES_PER_GRADIENT_STEP)


def evaluation_steps(
    attacks: Sequence[AttackSpecBase], samples: int, *, corruptions: CorruptionsSpec | None = None
) -> int:
    """Gradient steps of an evaluation: every attack at every eps on every sample (an upper bound), plus
    the forward passes of its corruptions."""
    return samples * sum(attack_steps(attack) for attack in attacks) + corruption_steps(corruptions, samples)


def corruption_forward_passes(corruptions: CorruptionsSpec | None, samples: int) -> int:
    """Forward passes of the corruptions: every sample under every corruption at every severity."""
    return 0 if corruptions is None else samples * corruptions.most_items()


def corruption_steps(corruptions: CorruptionsSpec | None, samples: int) -> int:
    """The corruptions' forward passes as gradient steps, at the rate the black-box attacks count."""
    return forward_steps(corruption_forward_passes(corruptions, samples))


def training_steps(spec: TrainingOptions, *, train_samples: int, validation_samples: int) -> int:
    """Gradient steps of a training: the epochs, the per-epoch check, `evaluate` before and after."""
    per_sample = 2 if spec.method == "fgsm-rs" else spec.steps + 1  # the attack's steps plus the update
    checked = validation_samples
    if spec.validation_samples is not None:
        checked = min(checked, spec.validation_samples)
    epochs = spec.epochs * (train_samples * per_sample + checked * spec.validation_steps)
    return epochs + 2 * evaluation_steps(spec.evaluate, validation_samples)


def hard_set_passes(samples: int, surrogates: int) -> int:
    """Forward passes of a hard-set job: each surrogate predicts every pool sample once.

    Held to the same per-job limit as gradient steps, although a forward pass costs less than one: the
    bound stays simple and errs on the side of refusing.
    """
    return samples * surrogates


def check_steps(steps: int, limit: int, *, what: str, hint: str, unit: str = "gradient steps") -> None:
    """Refuse a job of more than `limit` gradient steps, with a sentence that names both figures."""
    if steps > limit:
        raise IncompatibleSpec(
            f"this {what} would take about {steps:,} {unit}, more than the limit of {limit:,} per job; {hint}"
        )
