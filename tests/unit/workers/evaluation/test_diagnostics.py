"""The gradient-masking diagnostics on made-up per-sample outcomes (pure NumPy: what each one counts)."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.domain.specs import AttackSpecBase, AutoAttackSpec, FGSMSpec, PGDSpec
from workers.evaluation import diagnostics
from workers.evaluation.robustness import AttackRun, StageWork, attack_result

N = 200
CORRECT = np.ones(N, bool)
Y = np.zeros(N, np.int64)


class SquareLike(AttackSpecBase):
    """A black-box attack's spec as a report row sees it (its name is what the diagnostics read)."""

    name: str = "square"


def run(spec: AttackSpecBase, fooled: np.ndarray, **extra: Any) -> AttackRun:
    z = np.zeros(N, np.float32)
    return AttackRun(
        spec, 0, float(spec.eps_values()[0]), Y.copy(), fooled, z, z, CORRECT, Y, 0, 0, 0.0, **extra
    )


def first(k: int) -> np.ndarray:
    mask = np.zeros(N, bool)
    mask[:k] = True
    return mask


def results(runs: list[AttackRun]) -> list[Any]:
    return [attack_result(r, Y, CORRECT, 10) for r in runs]


def test_fgsm_leaving_many_where_pgd_leaves_almost_none() -> None:
    runs = [run(FGSMSpec(eps=0.5), first(50)), run(PGDSpec(eps=0.5), first(195))]
    (warning,) = diagnostics.masking_warnings(runs, results(runs), CORRECT)
    assert warning.startswith("fgsm leaves 150 of 200 samples correct at linf eps=0.5 where pgd leaves 5")
    # Both leaving many is no masking symptom.
    runs = [run(FGSMSpec(eps=0.5), first(50)), run(PGDSpec(eps=0.5), first(100))]
    assert diagnostics.masking_warnings(runs, results(runs), CORRECT) == []


def test_a_black_box_attack_breaking_what_gradients_did_not(small_autoattack: Any) -> None:
    square = run(SquareLike(eps=0.3), first(30))
    pgd = run(PGDSpec(eps=0.3), first(20))
    (warning,) = diagnostics.masking_warnings([pgd, square], results([pgd, square]), CORRECT)
    assert warning.startswith("the black-box square broke 10 of 200 samples at linf eps=0.3")
    # One sample in 200 is within the noise.
    square = run(SquareLike(eps=0.3), first(21))
    assert diagnostics.masking_warnings([pgd, square], results([pgd, square]), CORRECT) == []


def test_a_stage_still_breaking_at_its_last_restart(small_autoattack: Any) -> None:
    spec = AutoAttackSpec(eps=0.3, version="standard")  # small: APGD-CE with 2 restarts, then APGD-DLR
    broken_by = np.where(first(40), 1, 0).astype(np.int8)
    stages = [StageWork(attacked=N, broken=40, last_restart_broken=7), StageWork(attacked=160)]
    auto = run(spec, first(40), stages=stages, broken_by=broken_by)
    warnings = diagnostics.masking_warnings([auto], results([auto]), CORRECT)
    assert any("the last restart of apgd-ce-5×2 still broke 7 of 200 samples" in w for w in warnings)


def test_pgd_alone_against_the_ensemble(small_autoattack: Any) -> None:
    spec = AutoAttackSpec(eps=0.3, version="fast")
    broken_by = np.where(first(20), 1, np.where(first(100), 2, 0)).astype(np.int8)
    stages = [StageWork(attacked=N, broken=20), StageWork(attacked=180, broken=80)]
    auto = run(spec, first(100), stages=stages, broken_by=broken_by)
    # No PGD-40 row: the APGD-CE stage is what cross-entropy alone gives (90% against 50%).
    (warning,) = diagnostics.masking_warnings([auto], results([auto]), CORRECT)
    assert warning.startswith("apgd-ce-5 (its first stage) alone gives 90.0% robust accuracy at linf eps=0.3")
    assert "autoattack fast gives 50.0% (80 of 200 samples more broken)" in warning
    # The job's PGD-40 row is the reference when it has one; within 2 points, nothing to say.
    pgd = run(PGDSpec(eps=0.3), first(97))
    warnings = diagnostics.masking_warnings([pgd, auto], results([pgd, auto]), CORRECT)
    assert warnings == []


def test_an_attack_still_breaking_at_its_last_restart() -> None:
    pgd = run(PGDSpec(eps=0.3, restarts=5), first(40), last_restart_broken=6)
    (warning,) = diagnostics.masking_warnings([pgd], results([pgd]), CORRECT)
    assert warning.startswith("at linf eps=0.3, the last restart of pgd-40×5 still broke 6 of 200 samples")
    # One sample in 200 is within the noise.
    pgd = run(PGDSpec(eps=0.3, restarts=5), first(40), last_restart_broken=1)
    assert diagnostics.masking_warnings([pgd], results([pgd]), CORRECT) == []
