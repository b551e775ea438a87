"""Markdown: a summary table for a pull request or a GitHub job summary (`GITHUB_STEP_SUMMARY`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from service.domain.headline import headlines
from service.domain.results import EvaluationResult
from service.domain.verdicts import NO_THRESHOLDS, CheckOutcome, attack_label, is_judged, norm_text, pct
from service.reports.figures import NO_ATTACKS_NOTE, natural_figures


def markdown_report(
    result: EvaluationResult,
    outcomes: Sequence[CheckOutcome],
    *,
    job_id: str | None = None,
    reused_from: str | None = None,
    title: str = "Parry robustness check",
) -> str:
    """A heading with the verdict, one line of context, a table with a row per outcome, and the warnings."""
    lines = [f"### {_verdict(outcomes, title)}", ""]
    context = (
        f"{result.num_samples} samples, clean accuracy {pct(result.clean_accuracy)}, seed {result.seed}; "
        f"model `{result.model_sha256[:12]}`, dataset `{result.dataset_sha256[:12]}`"
    )
    if job_id:
        context += f"; job `{job_id}`"
    if reused_from:
        context += f" (result reused from `{reused_from}`)"
    lines += [context + ".", "", *_headline_lines(result)]
    with_baseline = any(o.baseline_robust_accuracy is not None for o in outcomes)
    header = ["", "attack", "robust accuracy", "95% CI", "required"] + (["baseline"] if with_baseline else [])
    lines.append("| " + " | ".join(header) + " |")
    lines.append(
        "|" + "|".join([":-:", "---", "--:", "--:", "--:"] + (["--:"] if with_baseline else [])) + "|"
    )
    for o in outcomes:
        lo, hi = o.ci95
        required = o.requirement() or "—"
        if o.requirement() and o.use_lower_bound:
            required += " (95% interval)" if o.max_value is not None else " (lower bound)"
        cells = [
            ("✅" if o.passed else "❌") if is_judged(o) else "—",
            _escape(o.name),
            o.shown(o.robust_accuracy),
            f"{pct(lo)}–{pct(hi)}" if lo < hi and not o.is_norm else "—",
            required,
        ]
        if with_baseline:
            cells.append(_baseline_cell(o))
        lines.append("| " + " | ".join(cells) + " |")
    problems = [o for o in outcomes if not o.passed]
    if problems:
        lines += ["", *(f"- **{_escape(o.name)}**: {_escape(o.message)}" for o in problems)]
    if any(row.cumulative for row in result.attacks):
        lines += ["", "The autoattack rows at larger eps are cumulative: each attacked only the samples that "
                  "survived the next smaller eps, and the samples broken there count as broken."]  # fmt: skip
    figures = natural_figures(result)
    if figures:
        lines += ["", "Figures: " + ", ".join(f"`{name}` {value:.4f}" for name, value in figures.items())]
    lines += _minimum_norm_lines(result)
    if result.corruptions is not None:
        lines += ["", _corruptions_line(result)]
    if result.warnings:
        lines += ["", "Warnings:", *(f"- {_escape(w)}" for w in result.warnings)]
    return "\n".join(lines) + "\n"


def _minimum_norm_lines(result: EvaluationResult) -> list[str]:
    """A table of the minimal norms of each minimum-norm attack (∞: no adversarial found)."""
    if not result.minimum_norm:
        return []
    lines = [
        "",
        "Minimal adversarial norms (over the samples correct when clean):",
        "",
        "| attack | norm | median | mean (found) | p10 | p25 | p75 | p90 | found |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for entry in result.minimum_norm:

        def shown(value: float | None) -> str:
            return norm_text(math.inf if value is None else value)

        q = entry.quantiles
        cells = [
            _escape(attack_label(entry.name, entry.spec)), entry.norm, shown(entry.median),
            "—" if entry.mean is None else shown(entry.mean), shown(q.p10), shown(q.p25), shown(q.p75),
            shown(q.p90), f"{entry.num_found}/{entry.num_attacked}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _corruptions_line(result: EvaluationResult) -> str:
    corruptions = result.corruptions
    assert corruptions is not None
    relative = corruptions.relative_error
    worst = min(corruptions.items, key=lambda item: item.accuracy, default=None)
    text = (
        f"Common corruptions: mean accuracy {pct(corruptions.mean_accuracy)} over {len(corruptions.items)} "
        f"corruption × severity items"
    )
    if relative is not None:
        text += f", {relative:.2f}× the clean error"
    if worst is not None:
        text += f"; lowest {pct(worst.accuracy)} ({worst.name} severity {worst.severity})"
    return text + "."


def _headline_lines(result: EvaluationResult) -> list[str]:
    """The figure to quote, per norm: the autoattack worst case when it ran, else a marked sanity figure."""
    lines = []
    for headline in headlines(result.model_dump(mode="json")):
        ci = f" (95% CI {pct(headline.ci95[0])}–{pct(headline.ci95[1])})" if headline.ci95 else ""
        title = _escape(headline.title())
        text = f"**{title[:1].upper()}{title[1:]}: {pct(headline.robust_accuracy)}**{ci}"
        lines.append(text + (f" — {headline.note()}." if headline.note() else "."))
    if not result.attacks:
        lines.append(f"**{NO_ATTACKS_NOTE[:1].upper()}{NO_ATTACKS_NOTE[1:]}.**")
    return [*lines, ""] if lines else []


def _verdict(outcomes: Sequence[CheckOutcome], title: str) -> str:
    """The heading: what failed, what passed, and what no threshold judged (which never reads "passed")."""
    failed = sum(not o.passed for o in outcomes)
    unjudged = sum(not is_judged(o) for o in outcomes)
    passed = len(outcomes) - failed - unjudged
    if unjudged == len(outcomes):
        return f"➖ {title}: {NO_THRESHOLDS}"
    parts = [f"{passed} passed"] if failed or unjudged else [f"all {passed} passed"]
    if failed:
        parts.append(f"{failed} failed")
    if unjudged:
        parts.append(f"{unjudged} with {NO_THRESHOLDS}")
    return f"{'❌' if failed else '✅'} {title}: {', '.join(parts)}"


def markdown_error_report(message: str, *, title: str = "Parry robustness check") -> str:
    """The summary of a check that could not run: the heading says so, the sentence says why."""
    return f"### ❌ {title}: could not run\n\n{_escape(message)}\n"


def _baseline_cell(outcome: CheckOutcome) -> str:
    if outcome.baseline_robust_accuracy is None:
        return "—"
    change = -(outcome.regression or 0.0)
    return f"{pct(outcome.baseline_robust_accuracy)} ({100 * change:+.1f})"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
