"""Calibration figures against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.evaluation.calibration import ECE_BINS, calibration, rms_calibration_error


def test_ece_and_rms_of_a_small_example() -> None:
    # By hand: 0.95 and 0.94 share the bin (14/15, 1] (accuracy 1/2, confidence 0.945, gap 0.445); the
    # other four are alone in their bins, so each gap is |correct - confidence|.
    confidence = np.array([0.95, 0.94, 0.78, 0.62, 0.57, 0.3])
    correct = np.array([True, False, False, True, False, False])
    result = calibration(confidence, correct)
    assert math.isclose(result.ece, (2 * 0.445 + 0.78 + 0.38 + 0.57 + 0.3) / 6, abs_tol=1e-12)
    # Fewer than 100 samples: one bin, accuracy 2/6 against mean confidence 4.16/6.
    assert math.isclose(result.rms_calibration_error, 4.16 / 6 - 2 / 6, abs_tol=1e-12)
    assert len(result.bins) == ECE_BINS and sum(b.count for b in result.bins) == 6
    top = result.bins[-1]
    assert (top.count, top.accuracy) == (2, 0.5) and math.isclose(top.confidence or 0, 0.945)
    assert math.isclose(top.lower, 14 / 15) and top.upper == 1.0
    assert result.bins[0].count == 0 and result.bins[0].accuracy is None
    assert [b.count for b in result.bins if b.count] == [1, 1, 1, 1, 2]


def test_rms_bins_hold_100_samples_and_the_last_takes_the_rest() -> None:
    # 100 at 0.5 all right (gap 0.5), then 100 at 0.7 with 70 right and 50 at 0.9 all wrong in one bin of
    # 150: confidence 115/150, accuracy 70/150, gap 0.3. sqrt(0.4 * 0.25 + 0.6 * 0.09).
    confidence = np.concatenate([np.full(100, 0.5), np.full(100, 0.7), np.full(50, 0.9)])
    correct = np.concatenate([np.ones(100), np.r_[np.ones(70), np.zeros(30)], np.zeros(50)]).astype(bool)
    assert math.isclose(rms_calibration_error(confidence, correct), math.sqrt(0.154), abs_tol=1e-12)


def test_a_perfectly_calibrated_model_has_no_error() -> None:
    confidence = np.full(200, 0.75)
    correct = np.tile([True, True, True, False], 50)  # 3 in 4 right in every bin of 100 too
    result = calibration(confidence, correct)
    assert result.ece == pytest.approx(0.0) and result.rms_calibration_error == pytest.approx(0.0, abs=1e-9)
