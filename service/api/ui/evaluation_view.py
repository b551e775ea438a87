"""What an evaluation result looks like on a page: tiles, warnings, charts, tables, reproducibility facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from service.api.ui.corruptions_view import corruptions_view
from service.api.ui.minimum_norm_view import minimum_norm_view
from service.api.ui.natural_view import natural_view
from service.api.ui.svg import Bars, Series, bar_chart, line_chart
from service.api.ui.values import as_list, as_map, class_key, class_map, fmt, num, pct, plain
from service.domain.headline import headlines
from service.reports.figures import NO_ATTACKS_NOTE

_WORST = "#000000"
_CLEAN = "#999999"
# Enough bars to compare, few enough to read: the largest eps values win.
_MAX_BAR_SERIES = 5


def evaluation_view(result: Mapping[str, Any], *, title_prefix: str = "") -> dict[str, Any]:
    """Tiles, charts and tables of an evaluation result (also used for a training's before/after)."""
    attacks = [a for a in as_list(result.get("attacks")) if isinstance(a, Mapping)]
    worst = [w for w in as_list(result.get("worst_case")) if isinstance(w, Mapping)]
    clean = num(result.get("clean_accuracy"))
    norms = sorted(
        {str(a.get("norm", "linf")) for a in attacks} | {str(w.get("norm", "linf")) for w in worst}
    )
    curves, per_class = [], []
    for norm in norms:
        curves.append(_accuracy_curve(attacks, worst, clean, norm, title_prefix))
        chart = _per_class_chart(result, worst, norm, title_prefix)
        if chart is not None:
            per_class.append(chart)
    tiles = [("clean accuracy", pct(clean)), ("samples", str(result.get("num_samples", "?")))]
    # The figure to quote: the autoattack worst case when it ran, else a sanity figure that says so.
    quoted = headlines(result)
    tiles += [(h.title(), pct(h.robust_accuracy)) for h in quoted]
    notes = list(dict.fromkeys(h.note() for h in quoted if h.note()))
    if not attacks:
        notes.append(NO_ATTACKS_NOTE)
    if any(a.get("cumulative") for a in attacks):
        notes.append(
            "autoattack rows marked cumulative attacked only the samples that survived the next smaller "
            "eps; the samples broken there count as broken"
        )
    return {
        "tiles": tiles,
        "notes": notes,
        "warnings": [str(w) for w in as_list(result.get("warnings"))],
        "curves": curves,
        "per_class": per_class,
        "attacks": [row for a in attacks for row in _attack_rows(a)],
        "worst": [
            {
                "norm": w.get("norm"),
                "eps": fmt(w.get("eps")),
                "attacks": ", ".join(str(n) for n in as_list(w.get("attacks"))),
                "robust": pct(num(w.get("robust_accuracy"))),
            }
            for w in worst
        ],
        "class_table": _class_table(result, worst),
        "facts": facts(result),
        "natural": natural_view(result, title_prefix=title_prefix),
        "minimum_norm": minimum_norm_view(result, title_prefix=title_prefix),
        "corruptions": corruptions_view(result),
    }


def _accuracy_curve(
    attacks: Sequence[Mapping[str, Any]],
    worst: Sequence[Mapping[str, Any]],
    clean: float | None,
    norm: str,
    title_prefix: str,
) -> Markup:
    groups: dict[str, list[tuple[float, float]]] = {}
    for a in attacks:
        eps, acc = num(a.get("eps")), num(a.get("robust_accuracy"))
        if str(a.get("norm", "linf")) != norm or eps is None or acc is None:
            continue
        groups.setdefault(attack_label(a), []).append((eps, acc))
    series = [Series(label, from_clean(points, clean)) for label, points in groups.items()]
    worst_points = [
        (e, r)
        for w in worst
        if w.get("norm") == norm and (e := num(w.get("eps"))) is not None
        if (r := num(w.get("robust_accuracy"))) is not None
    ]
    if worst_points and len(groups) > 1:
        series.append(Series("worst case", from_clean(worst_points, clean), dashed=True, color=_WORST))
    eps_values = sorted({x for s in series for x, _ in s.points})
    return line_chart(
        series,
        title=f"{title_prefix}Robust accuracy vs eps ({norm})",
        x_label=f"eps ({norm})",
        y_label="robust accuracy",
        x_ticks=eps_values if len(eps_values) <= 8 else None,
    )


def from_clean(points: list[tuple[float, float]], clean: float | None) -> list[tuple[float, float]]:
    """The curve starts at eps 0, where robust accuracy is the clean accuracy."""
    if clean is not None and not any(x == 0 for x, _ in points):
        points = [(0.0, clean), *points]
    return sorted(points)


def _per_class_chart(
    result: Mapping[str, Any], worst: Sequence[Mapping[str, Any]], norm: str, title_prefix: str
) -> Markup | None:
    clean = class_map(result.get("per_class_clean_accuracy"))
    group = sorted((w for w in worst if w.get("norm") == norm), key=lambda w: num(w.get("eps")) or 0.0)[
        -_MAX_BAR_SERIES:
    ]
    classes = sorted(set(clean) | {c for w in group for c in class_map(w.get("per_class_robust_accuracy"))},
                     key=class_key)  # fmt: skip
    if not classes or len(classes) > 40:
        return None
    bars = []
    if clean:
        bars.append(Bars("clean", [clean.get(c) for c in classes], color=_CLEAN))
    for w in group:
        values = class_map(w.get("per_class_robust_accuracy"))
        bars.append(Bars(f"eps={fmt(w.get('eps'))}", [values.get(c) for c in classes]))
    return bar_chart(
        classes,
        bars,
        title=f"{title_prefix}Per-class accuracy, worst case over attacks ({norm})",
        x_label="class",
        y_label="accuracy",
    )


def _class_table(result: Mapping[str, Any], worst: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    clean = class_map(result.get("per_class_clean_accuracy"))
    columns = [(f"{w.get('norm')} eps={fmt(w.get('eps'))}", class_map(w.get("per_class_robust_accuracy")))
               for w in worst]  # fmt: skip
    classes = sorted(set(clean) | {c for _, m in columns for c in m}, key=class_key)
    return {
        "headers": ["clean", *[name for name, _ in columns]],
        "rows": [(c, [pct(clean.get(c)), *[pct(m.get(c)) for _, m in columns]]) for c in classes],
    }


def _attack_rows(a: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An attack's row, then for an ensemble one row per stage: robust accuracy after it, its time."""
    rows = [_attack_row(a)]
    for stage in as_list(a.get("stages")):
        if isinstance(stage, Mapping):
            attacked = plain(stage.get("num_attacked"))
            rows.append(
                {
                    "label": f"↳ after {stage.get('name', '?')} ({attacked} attacked)",
                    "eps": fmt(a.get("eps")),
                    "robust": pct(num(stage.get("robust_accuracy"))),
                    "success": "", "linf": "", "l2": "", "rate": "",
                    "seconds": fmt(stage.get("seconds"), "{:.2f}"),
                }
            )  # fmt: skip
    return rows


def _attack_row(a: Mapping[str, Any]) -> dict[str, Any]:
    perturbation = as_map(a.get("mean_perturbation"))
    return {
        "label": attack_label(a) + (" (cumulative)" if a.get("cumulative") else ""),
        "eps": fmt(a.get("eps")),
        "robust": pct(num(a.get("robust_accuracy"))),
        "success": pct(num(a.get("attack_success_rate"))),
        "linf": fmt(perturbation.get("linf")),
        "l2": fmt(perturbation.get("l2")),
        "seconds": fmt(a.get("seconds"), "{:.2f}"),
        "rate": fmt(a.get("samples_per_second"), "{:.0f}"),
    }


def attack_label(a: Mapping[str, Any]) -> str:
    """`pgd linf` plus the settings that tell two runs of one attack apart (steps, restarts, loss)."""
    spec = as_map(a.get("spec"))
    parts = [str(a.get("name", "?")), str(a.get("norm", spec.get("norm", "")))]
    if "version" in spec:
        parts.append(str(spec["version"]))
    if "steps" in spec:
        parts.append(f"{spec['steps']} steps")
    if isinstance(spec.get("restarts"), int) and spec["restarts"] > 1:
        parts.append(f"×{spec['restarts']}")
    if spec.get("loss") not in (None, "ce"):
        parts.append(str(spec["loss"]))
    if spec.get("targeted"):
        parts.append("targeted")
    return " ".join(p for p in parts if p)


def facts(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = []
    for key, label in (
        ("model_sha256", "model sha256"),
        ("dataset_sha256", "dataset sha256"),
        ("train_dataset_sha256", "training data sha256"),
        ("validation_dataset_sha256", "validation data sha256"),
        ("seed", "seed"),
        ("input_range", "input range"),
        ("num_samples", "samples"),
        ("num_train_samples", "training samples"),
        ("num_validation_samples", "validation samples"),
        ("seconds", "seconds"),
    ):
        if key in result and result[key] is not None:
            value = result[key]
            facts.append((label, fmt(value, "{:.1f}") if key == "seconds" else plain(value)))
    cost = result.get("cost")
    if isinstance(cost, Mapping):
        forward, backward = plain(cost.get("forward_passes")), plain(cost.get("backward_passes"))
        per_sample = fmt(cost.get("backward_per_sample"), "{:.1f}")
        facts.append(
            (
                "gradient work",
                f"{forward} forward, {backward} backward passes ({per_sample} backward per sample)",
            )
        )
    versions = result.get("versions")
    if isinstance(versions, Mapping):
        facts += [(f"{name} version", str(value)) for name, value in sorted(versions.items())]
    return facts
