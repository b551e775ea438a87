"""The figures of an evaluation that are not robust accuracies (calibration, OOD), named as metric paths.

Both pipeline reports list them, so a threshold can be written by copying a name from either.
"""

from __future__ import annotations

from service.domain.metric_paths import OOD_FIGURES
from service.domain.results import EvaluationResult

NO_ATTACKS_NOTE = (
    "no robust accuracy: this evaluation ran no attack (it measured calibration and OOD detection only)"
)


def natural_figures(result: EvaluationResult) -> dict[str, float]:
    """`calibration.ece`, `ood.msp.auroc`, ... to their values, in report order (empty for old results)."""
    figures: dict[str, float] = {}
    if result.calibration is not None:
        figures["calibration.ece"] = result.calibration.ece
        figures["calibration.rms_calibration_error"] = result.calibration.rms_calibration_error
    for row in result.ood or []:
        for figure in OOD_FIGURES:
            figures[f"ood.{row.score}.{figure}"] = float(getattr(row, figure))
    return figures
