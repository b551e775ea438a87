"""Out-of-distribution detection figures from per-sample scores of both sets, with scikit-learn's metrics.

In-distribution is the positive class and a higher score means in-distribution, for every score. The
figures come from the whole per-sample arrays, so a sharded evaluation gets the ones a whole one gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from service.domain.results import OODResult, RocCurve, ScoreHistogram

HISTOGRAM_BINS = 30
ROC_POINTS = 200
TPR_LEVEL = 0.95


class OODScoreError(ValueError):
    """The scores cannot be judged (non-finite values); the message is one sentence."""


def ood_results(names: Sequence[str], in_scores: np.ndarray, out_scores: np.ndarray) -> list[OODResult]:
    """One result per score name; `in_scores` and `out_scores` hold one column per name, in that order."""
    return [ood_result(name, in_scores[:, k], out_scores[:, k]) for k, name in enumerate(names)]


def ood_result(name: str, in_scores: np.ndarray, out_scores: np.ndarray) -> OODResult:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR of one score, plus its histograms and ROC curve."""
    scores = np.concatenate([in_scores, out_scores]).astype(np.float64)
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise OODScoreError(f"the {name} score is not finite on {bad} samples: the model's outputs overflow")
    if in_scores.size == 0 or out_scores.size == 0:
        raise OODScoreError("OOD detection needs samples in both the evaluation's dataset and the OOD one")
    is_in = np.concatenate([np.ones(in_scores.size, np.int64), np.zeros(out_scores.size, np.int64)])
    fpr, tpr, _ = roc_curve(is_in, scores, drop_intermediate=False)
    return OODResult(
        score=name,
        auroc=float(roc_auc_score(is_in, scores)),
        aupr_in=float(average_precision_score(is_in, scores)),
        aupr_out=float(average_precision_score(1 - is_in, -scores)),
        fpr_at_95_tpr=fpr_at_tpr(fpr, tpr, TPR_LEVEL),
        num_in=int(in_scores.size),
        num_out=int(out_scores.size),
        histogram=histogram(in_scores, out_scores),
        roc=thinned_roc(fpr, tpr),
    )


def fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """The FPR at the first threshold, lowering it from the top, whose TPR reaches `level`."""
    reached = np.flatnonzero(tpr >= level - 1e-12)
    return float(fpr[reached[0]])


def histogram(in_scores: np.ndarray, out_scores: np.ndarray) -> ScoreHistogram:
    both = np.concatenate([in_scores, out_scores]).astype(np.float64)
    low, high = float(both.min()), float(both.max())
    if high <= low:  # every score equal (a constant energy, say): one bin around it
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    return ScoreHistogram(
        edges=[float(e) for e in edges],
        in_distribution=[int(c) for c in np.histogram(in_scores, edges)[0]],
        out_of_distribution=[int(c) for c in np.histogram(out_scores, edges)[0]],
    )


def thinned_roc(fpr: np.ndarray, tpr: np.ndarray) -> RocCurve:
    """At most `ROC_POINTS` points of the curve, its two ends always kept."""
    if fpr.size > ROC_POINTS:
        keep = np.unique(np.linspace(0, fpr.size - 1, ROC_POINTS).round().astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return RocCurve(fpr=[float(v) for v in fpr], tpr=[float(v) for v in tpr])
