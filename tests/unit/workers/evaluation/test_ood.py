"""OOD detection figures against values worked out by hand (scikit-learn computes them, it is no oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.evaluation.ood import OODScoreError, ood_result


def test_auroc_aupr_and_fpr_of_a_small_example() -> None:
    result = ood_result("msp", np.array([4.0, 3.0, 2.0, 1.0]), np.array([2.5, 1.5, 0.5]))
    # Of the 12 (in, out) pairs, the in-distribution score is higher in 3 + 3 + 2 + 1.
    assert result.auroc == pytest.approx(9 / 12)
    # Ranked 4 3 [2.5] 2 [1.5] 1 [0.5]: the positives come at ranks 1, 2, 4 and 6.
    assert result.aupr_in == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    # Negated, OOD first: 0.5 at rank 1, 1.5 at rank 3, 2.5 at rank 5.
    assert result.aupr_out == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # 95% of four positives needs all four: at threshold 1, two of the three OOD samples pass.
    assert result.fpr_at_95_tpr == pytest.approx(2 / 3)
    assert (result.num_in, result.num_out) == (4, 3)
    assert sum(result.histogram.in_distribution) == 4 and sum(result.histogram.out_of_distribution) == 3
    assert result.roc.fpr[0] == 0.0 and result.roc.fpr[-1] == 1.0 and result.roc.tpr[-1] == 1.0


def test_fpr_is_taken_at_the_first_threshold_reaching_95_percent() -> None:
    in_scores = np.arange(1.0, 21.0)  # 20 positives: 19 of them (95%) score 2 or more
    out_scores = np.array([1.5, 5.5, 10.5, 21.0])
    result = ood_result("energy", in_scores, out_scores)
    # At threshold 2: 1.5 is below, three OOD samples pass (at threshold 1 all four would).
    assert result.fpr_at_95_tpr == pytest.approx(3 / 4)
    # Pairs won by the positive: 19 above 1.5, 15 above 5.5, 10 above 10.5, none above 21.
    assert result.auroc == pytest.approx(44 / 80)


def test_ties_count_half() -> None:
    result = ood_result("max_logit", np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    assert result.auroc == pytest.approx(3 / 4)


def test_non_finite_scores_are_a_sentence() -> None:
    with pytest.raises(OODScoreError, match="not finite on 1 samples"):
        ood_result("energy", np.array([1.0, np.inf]), np.array([0.0]))
