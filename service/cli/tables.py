"""Evaluation results as tables for a terminal."""

from __future__ import annotations

from rich.table import Table

from service.domain.results import EvaluationResult


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def result_table(result: EvaluationResult) -> Table:
    table = Table(
        title=(
            f"{result.num_samples} samples, clean accuracy {_pct(result.clean_accuracy)}, seed {result.seed}"
        ),
        title_justify="left",
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
            _attack_label(row.name, row.spec),
            row.norm,
            f"{row.eps:g}",
            _pct(row.robust_accuracy),
            _pct(row.attack_success_rate),
            f"{row.mean_perturbation.linf:.4g}",
            f"{row.mean_perturbation.l2:.4g}",
            f"{row.cost.forward_per_sample + row.cost.backward_per_sample:.1f}",
            f"{row.samples_per_second:.0f}",
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


def _attack_label(name: str, spec: dict[str, object]) -> str:
    if name == "pgd":
        label = f"pgd-{spec.get('steps', 40)}"
        if int(str(spec.get("restarts", 1))) > 1:
            label += f"×{spec['restarts']}"
        if spec.get("loss") == "cw":
            label += " cw"
    else:
        label = name
    return label + (" (targeted)" if spec.get("targeted") else "")
