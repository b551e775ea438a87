"""Job results as tables for a terminal: an evaluation's rows, a training's before and after, the summary.

`parry evaluate`, `parry wait` (and `--wait`) and `parry report --format table` print these.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from service.domain.headline import headlines
from service.domain.results import EvaluationResult, TrainingResult
from service.domain.verdicts import attack_label, pct
from service.reports.figures import NO_ATTACKS_NOTE, natural_figures

WIDE = 160  # columns for logs and pipes: rich would assume 80 and wrap the table's cells


def output_console(*, stderr: bool = False) -> Console:
    """A console for a table: the terminal's width, or WIDE when the output is a log or a pipe."""
    console = Console(stderr=stderr, highlight=False)
    return console if console.is_terminal else Console(stderr=stderr, highlight=False, width=WIDE)


def result_table(result: EvaluationResult) -> Table:
    """Every row, the worst cases, and as caption the headline: the figure to quote, per norm."""
    quoted = [h.sentence() for h in headlines(result.model_dump(mode="json"))]
    if not result.attacks:
        quoted.append(NO_ATTACKS_NOTE)
    quoted += [f"{name}: {value:.4f}" for name, value in natural_figures(result).items()]
    table = Table(
        title=f"{result.num_samples} samples, clean accuracy {pct(result.clean_accuracy)}, "
        f"seed {result.seed}",
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
            pct(row.robust_accuracy),
            pct(row.attack_success_rate),
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
                pct(stage.robust_accuracy),
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
                pct(worst.robust_accuracy),
                *[""] * 5,
                style="bold",
            )
    for entry in result.minimum_norm:  # the median minimal norm in the eps column
        median = "∞" if entry.median is None else f"{entry.median:.4g}"
        per_sample = entry.cost.forward_per_sample + entry.cost.backward_per_sample
        table.add_row(
            f"{attack_label(entry.name, entry.spec)} median minimal norm", entry.norm, median,
            f"found {entry.num_found}/{entry.num_attacked}", "", "", "", f"{per_sample:.1f}", "",
        )  # fmt: skip
    return table


def training_table(result: TrainingResult) -> Table:
    """Per epoch: loss and validation accuracies, the exported epoch marked."""
    table = Table(
        title=f"{result.method} training, {result.epochs_completed} epochs on {result.num_train_samples} "
        f"samples ({result.num_validation_samples} for validation)",
        title_justify="left",
    )
    for column in ("epoch", "eps", "loss", "clean acc", "robust acc", "seconds"):
        table.add_column(column, justify="right")
    for epoch in result.history:
        table.add_row(
            str(epoch.epoch),
            f"{epoch.eps:.3g}",
            f"{epoch.loss:.4f}",
            pct(epoch.clean_accuracy),
            pct(epoch.robust_accuracy),
            f"{epoch.seconds:.1f}",
            style="bold" if epoch.epoch == result.best_epoch else None,
        )
    return table


def before_after_table(result: TrainingResult) -> Table | None:
    """The `evaluate` attacks before and after training, row by row; None when none were asked for."""
    before, after = result.before, result.after
    if after is None:
        return None
    table = Table(title="before → after training", title_justify="left")
    for column in ("attack", "norm", "eps", "before", "after"):
        table.add_column(column, justify="left" if column in ("attack", "norm") else "right")
    old = {(r.name, r.norm, r.eps): r.robust_accuracy for r in before.attacks} if before else {}
    table.add_row("clean", "", "", pct(before.clean_accuracy) if before else "", pct(after.clean_accuracy))
    for row in after.attacks:
        was = old.get((row.name, row.norm, row.eps))
        table.add_row(
            attack_label(row.name, row.spec),
            row.norm,
            f"{row.eps:g}",
            "" if was is None else pct(was),
            pct(row.robust_accuracy),
        )
    return table


def job_summary(job: dict[str, Any]) -> list[RenderableType]:
    """What a finished job found, for a terminal: the tables of its result, its warnings or notes, and for
    a training the new model's id. Empty when the job has no result it can show."""
    result = job.get("result")
    if not isinstance(result, dict):
        return []
    try:
        if job.get("kind") == "training":
            return _training_summary(TrainingResult.model_validate(result))
        evaluation = EvaluationResult.model_validate(result)
    except ValidationError:
        return []  # a result from a newer server: the JSON report still has it all
    parts: list[RenderableType] = [result_table(evaluation)]
    corruptions = corruption_table(evaluation)
    if corruptions is not None:
        parts.append(corruptions)
    parts += [Text(f"warning: {w}", style="yellow") for w in evaluation.warnings]
    return parts


def _training_summary(result: TrainingResult) -> list[RenderableType]:
    parts: list[RenderableType] = [training_table(result)]
    comparison = before_after_table(result)
    if comparison is not None:
        parts.append(comparison)
    parts += [Text(f"note: {note}", style="yellow") for note in result.notes]
    if result.model_id:
        parts.append(Text(f"new model: {result.model_id}", style="bold"))
    return parts


def corruption_table(result: EvaluationResult) -> Table | None:
    """Accuracy per corruption (rows) and severity (columns), with the mean and relative error as caption."""
    corruptions = result.corruptions
    if corruptions is None:
        return None
    severities = sorted({item.severity for item in corruptions.items})
    relative = corruptions.relative_error
    caption = f"mean accuracy {pct(corruptions.mean_accuracy)}"
    caption += "" if relative is None else f", {relative:.2f}× the clean error"
    if corruptions.skipped:
        caption += f"; not applicable: {', '.join(corruptions.skipped)}"
    table = Table(title="common corruptions", title_justify="left", caption=caption, caption_justify="left")
    table.add_column("corruption")
    for severity in severities:
        table.add_column(f"severity {severity}", justify="right")
    by_name: dict[str, dict[int, float]] = {}
    for item in corruptions.items:
        by_name.setdefault(item.name, {})[item.severity] = item.accuracy
    for name, accuracies in by_name.items():
        table.add_row(name, *(pct(accuracies[s]) if s in accuracies else "—" for s in severities))
    return table
