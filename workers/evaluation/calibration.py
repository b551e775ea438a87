"""Calibration of the clean predictions: expected and RMS calibration error, and the reliability diagram.

Computed from per-sample confidences and correctness, so a sharded evaluation gets the same figures as a
whole one (the clean pass is never split; were it, the per-sample values would be joined first).
"""

from __future__ import annotations

import numpy as np

from service.domain.results import CalibrationBin, CalibrationResult

ECE_BINS = 15
# Hendrycks et al. (Natural Adversarial Examples, 2021) estimate the RMS calibration error with bins of
# about 100 samples each in confidence order, rather than with fixed-width bins.
RMS_BIN_SIZE = 100


def calibration(confidence: np.ndarray, correct: np.ndarray) -> CalibrationResult:
    """ECE over 15 equal-width bins, the RMS calibration error, and the bins of the reliability diagram.

    A sample of confidence c falls in the bin (k/15, (k+1)/15] that holds c (a confidence of exactly 0
    in the first bin), as in Guo et al. (2017).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    n = conf.shape[0]
    if n == 0:
        raise ValueError("calibration needs at least one sample")
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    index = np.clip(np.ceil(conf * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    bins, ece = [], 0.0
    for k in range(ECE_BINS):
        members = index == k
        count = int(members.sum())
        accuracy = float(right[members].mean()) if count else None
        mean_conf = float(conf[members].mean()) if count else None
        if accuracy is not None and mean_conf is not None:
            ece += count / n * abs(accuracy - mean_conf)
        bins.append(
            CalibrationBin(
                lower=float(edges[k]),
                upper=float(edges[k + 1]),
                count=count,
                accuracy=accuracy,
                confidence=mean_conf,
            )
        )
    return CalibrationResult(
        ece=float(ece),
        rms_calibration_error=rms_calibration_error(conf, right),
        mean_confidence=float(conf.mean()),
        bins=bins,
    )


def rms_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """sqrt(sum over bins of (count / n) * (accuracy - mean confidence)^2), bins of `RMS_BIN_SIZE` samples in
    confidence order, the last one taking the remainder (one bin when there are fewer samples)."""
    order = np.argsort(confidence, kind="stable")
    conf, right = confidence[order], correct[order]
    n = conf.shape[0]
    starts = list(range(0, max(n // RMS_BIN_SIZE, 1) * RMS_BIN_SIZE, RMS_BIN_SIZE))
    stops = [*starts[1:], n]
    total = 0.0
    for start, stop in zip(starts, stops, strict=True):
        gap = float(right[start:stop].mean()) - float(conf[start:stop].mean())
        total += (stop - start) / n * gap * gap
    return float(np.sqrt(total))
