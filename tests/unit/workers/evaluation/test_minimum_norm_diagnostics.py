"""The masking warning of minimum-norm attacks, on made-up runs: a bounded attack fooling samples at an eps
where the minimum-norm search found nothing that small."""

from __future__ import annotations

import math

import numpy as np

from service.domain.specs import CWSpec, PGDSpec
from workers.evaluation.diagnostics import bounded_beats_minimum_norm
from workers.evaluation.minimum_norm import eps_rows
from workers.evaluation.robustness import AttackRun

N = 100


def run(spec: object, eps: float, fooled: np.ndarray, norms: np.ndarray | None = None) -> AttackRun:
    zeros = np.zeros(N, np.float32)
    labels = np.zeros(N, np.int64)
    return AttackRun(
        spec, 0, eps, labels, fooled, zeros, zeros, np.ones(N, bool), labels, 0, 0, 0.0, norms=norms,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_bounded_attack_beating_the_search_is_reported_with_its_count() -> None:
    correct = np.ones(N, bool)
    norms = np.full(N, 2.0)
    norms[:10] = 0.5
    search = run(CWSpec(eps=[1.0]), math.inf, np.ones(N, bool), norms)
    pgd_fooled = np.zeros(N, bool)
    pgd_fooled[:17] = True  # 10 the search found below 1.0, 7 it did not
    rows = [run(PGDSpec(eps=1.0, norm="l2"), 1.0, pgd_fooled), *eps_rows(search, np.zeros(N, np.int64))]
    (warning,) = bounded_beats_minimum_norm(rows, [search], correct)
    assert warning.startswith("pgd-40 found adversarials for 7 of 100 samples at l2 eps=1 where cw-9×1000")
    # The search's own rows never warn, and a bounded attack in another norm is not compared.
    other = run(PGDSpec(eps=1.0, norm="linf"), 1.0, np.ones(N, bool))
    assert bounded_beats_minimum_norm([other, *rows[1:]], [search], correct) == []
