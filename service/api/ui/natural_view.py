"""The calibration and OOD sections of an evaluation's page: reliability diagram, score histograms, ROC.

Reads the result as a plain mapping (old results have neither section), like evaluation_view.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from service.api.ui.svg import Bars, Series, bar_chart, line_chart
from service.api.ui.values import as_list, as_map, fmt, num, pct

# Every how many histogram bins a bin's value is written under the axis (30 labels would overlap).
_LABEL_EVERY = 5


def natural_view(result: Mapping[str, Any], *, title_prefix: str = "") -> dict[str, Any]:
    """`calibration` (tiles and the reliability diagram) and `ood` (one entry per score), or None each."""
    return {
        "calibration": _calibration(as_map(result.get("calibration")), title_prefix),
        "ood": [
            _ood(as_map(row), title_prefix) for row in as_list(result.get("ood")) if isinstance(row, Mapping)
        ],
    }


def _calibration(calibration: Mapping[str, Any], title_prefix: str) -> dict[str, Any] | None:
    if not calibration:
        return None
    bins = [as_map(b) for b in as_list(calibration.get("bins"))]
    categories = [fmt(b.get("upper"), "≤{:.2f}") for b in bins]
    chart = bar_chart(
        categories,
        [
            Bars("accuracy", [num(b.get("accuracy")) for b in bins]),
            Bars("mean confidence", [num(b.get("confidence")) for b in bins]),
        ],
        title=f"{title_prefix}Reliability diagram (clean data, 15 confidence bins)",
        x_label="confidence bin",
        y_label="accuracy / confidence",
        width=720,
    )
    return {
        "tiles": [
            ("expected calibration error", pct(num(calibration.get("ece")))),
            ("RMS calibration error", pct(num(calibration.get("rms_calibration_error")))),
            ("mean confidence", pct(num(calibration.get("mean_confidence")))),
        ],
        "chart": chart,
        "counts": [int(num(b.get("count")) or 0) for b in bins],
    }


def _ood(row: Mapping[str, Any], title_prefix: str) -> dict[str, Any]:
    score = str(row.get("score", "?"))
    return {
        "score": score,
        "figures": [
            ("AUROC", pct(num(row.get("auroc")))),
            ("AUPR in", pct(num(row.get("aupr_in")))),
            ("AUPR out", pct(num(row.get("aupr_out")))),
            ("FPR at 95% TPR", pct(num(row.get("fpr_at_95_tpr")))),
            ("samples in / out", f"{row.get('num_in', '?')} / {row.get('num_out', '?')}"),
        ],
        "histogram": _histogram(score, as_map(row.get("histogram")), title_prefix),
        "roc": _roc(score, as_map(row.get("roc")), title_prefix),
    }


def _histogram(score: str, histogram: Mapping[str, Any], title_prefix: str) -> Markup:
    edges = [num(e) for e in as_list(histogram.get("edges"))]
    counts_in = [num(c) or 0.0 for c in as_list(histogram.get("in_distribution"))]
    counts_out = [num(c) or 0.0 for c in as_list(histogram.get("out_of_distribution"))]
    # Each set as fractions of its own samples, so sets of different sizes compare.
    total_in, total_out = sum(counts_in) or 1.0, sum(counts_out) or 1.0
    categories = [
        fmt(edges[i], "{:.3g}") if i % _LABEL_EVERY == 0 and i < len(edges) else ""
        for i in range(len(counts_in))
    ]
    return bar_chart(
        categories,
        [
            Bars("in-distribution", [c / total_in for c in counts_in]),
            Bars("out-of-distribution", [c / total_out for c in counts_out]),
        ],
        title=f"{title_prefix}{score} score, both sets",
        x_label=f"{score} (bin lower edge)",
        y_label="fraction of the set",
        width=720,
    )


def _roc(score: str, roc: Mapping[str, Any], title_prefix: str) -> Markup:
    fpr = [num(v) for v in as_list(roc.get("fpr"))]
    tpr = [num(v) for v in as_list(roc.get("tpr"))]
    points = [(x, y) for x, y in zip(fpr, tpr, strict=False) if x is not None and y is not None]
    return line_chart(
        [Series(f"{score} ROC", points), Series("chance", [(0.0, 0.0), (1.0, 1.0)], dashed=True)],
        title=f"{title_prefix}ROC, {score} (in-distribution positive)",
        x_label="false-positive rate (OOD kept)",
        y_label="true-positive rate",
        x_ticks=[0.0, 0.25, 0.5, 0.75, 1.0],
    )
