"""Evaluation results as tables for a terminal."""

from __future__ import annotations

from rich.table import Table

from service.domain.headline import headlines
from service.domain.results import EvaluationResult
from service.domain.verdicts import attack_label


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def result_table(result: EvaluationResult) -> Table:
    """Every row, the worst cases, and as caption the headline: the figure to quote, per norm."""
    quoted = [h.sentence() for h in headlines(result.model_dump(mode="json"))]
    table = Table(
        title=(
            f"{result.num_samples} samples, clean accuracy {_pct(result.clean_accuracy)}, seed {result.seed}"
        ),
        title_justify="left",
        caption="\n".join(quoted) or None,
        caption_justify="left",
    )
    for column in (
        "attack",
        "norm",
        "eps",
        "robust acc",
        "success rate",
        "mean L∞",
        "mean L2",
        "fwd+bwd/sample",
    ):
        table.add_column(column, justify="left" if column in ("attack", "norm") else "right")
    table.add_column("samples/s", justify="right")
    for row in result.attacks:
        table.add_row(
            attack_label(row.name, row.spec) + (" (cumulative)" if row.cumulative else ""),
            row.norm,
            f"{row.eps:g}",
            _pct(row.robust_accuracy),
            _pct(row.attack_success_rate),
            f"{row.mean_perturbation.linf:.4g}",
            f"{row.mean_perturbation.l2:.4g}",
            f"{row.cost.forward_per_sample + row.cost.backward_per_sample:.1f}",
            f"{row.samples_per_second:.0f}",
        )
        for stage in row.stages or []:  # an ensemble: robust accuracy after each of its stages
            per_sample = stage.cost.forward_per_sample + stage.cost.backward_per_sample
            table.add_row(
                f"  ↳ after {stage.name}",
                "",
                "",
                _pct(stage.robust_accuracy),
                "",
                "",
                "",
                f"{per_sample:.1f}",
                "",
            )
    for worst in result.worst_case:
        if len(worst.attacks) > 1:
            table.add_row(
                "worst case",
                worst.norm,
                f"{worst.eps:g}",
                _pct(worst.robust_accuracy),
                "",
                "",
                "",
                "",
                "",
                style="bold",
            )
    return table
