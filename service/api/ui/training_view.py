"""What a training result looks like on a page: per-epoch curves, history, before/after, the new model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from service.api.ui.evaluation_view import attack_label, evaluation_view, facts, from_clean
from service.api.ui.svg import Series, line_chart
from service.api.ui.values import as_list, fmt, num, pct, plain


def training_view(result: Mapping[str, Any]) -> dict[str, Any]:
    """Per-epoch curves, the history table, before/after comparison and facts of a training result."""
    history = sorted(
        (
            h
            for h in as_list(result.get("history"))
            if isinstance(h, Mapping) and num(h.get("epoch")) is not None
        ),
        key=lambda h: num(h.get("epoch")) or 0.0,
    )

    def points(key: str) -> list[tuple[float, float]]:
        out = []
        for h in history:
            epoch, value = num(h.get("epoch")), num(h.get(key))
            if epoch is not None and value is not None:
                out.append((epoch, value))
        return out

    epochs = [e for e, _ in points("loss")] or [e for e, _ in points("clean_accuracy")]
    ticks = epochs if 0 < len(epochs) <= 12 else None
    accuracy = line_chart(
        [
            Series("clean (validation)", points("clean_accuracy"), color="#0072B2"),
            Series("robust (validation)", points("robust_accuracy"), color="#D55E00"),
            Series("train (adversarial)", points("train_accuracy"), dashed=True, color="#009E73"),
        ],
        title="Accuracy per epoch",
        x_label="epoch",
        y_label="accuracy",
        x_ticks=ticks,
    )
    loss = line_chart(
        [Series("training loss", points("loss"), color="#CC79A7")],
        title="Training loss per epoch",
        x_label="epoch",
        y_label="loss",
        y_range=None,
        percent=False,
        x_ticks=ticks,
    )
    before = result.get("before") if isinstance(result.get("before"), Mapping) else None
    after = result.get("after") if isinstance(result.get("after"), Mapping) else None
    best = result.get("best_epoch")
    return {
        "tiles": _training_tiles(result, history),
        "curves": [accuracy, loss],
        "history": [
            {
                "epoch": plain(h.get("epoch")),
                "best": h.get("epoch") == best,
                "loss": fmt(h.get("loss"), "{:.4f}"),
                "train": pct(num(h.get("train_accuracy"))),
                "clean": pct(num(h.get("clean_accuracy"))),
                "robust": pct(num(h.get("robust_accuracy"))),
                "eps": fmt(h.get("eps")),
                "lr": fmt(h.get("learning_rate")),
                "seconds": fmt(h.get("seconds"), "{:.1f}"),
            }
            for h in history
        ],
        "notes": [str(n) for n in as_list(result.get("notes"))],
        "comparison": _before_after(before, after),
        "comparison_curves": _before_after_curves(before, after),
        "after": evaluation_view(after, title_prefix="After training: ") if after else None,
        "facts": [("method", plain(result.get("method"))), *facts(result)],
        "new_model_id": result.get("model_id"),
    }


def _training_tiles(result: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    tiles = [("method", plain(result.get("method"))), ("epochs", plain(result.get("epochs_completed")))]
    best = result.get("best_epoch")
    chosen = next((h for h in history if h.get("epoch") == best), history[-1] if history else None)
    if chosen is not None:
        tiles.append((f"clean, epoch {plain(chosen.get('epoch'))}", pct(num(chosen.get("clean_accuracy")))))
        tiles.append((f"robust, epoch {plain(chosen.get('epoch'))}", pct(num(chosen.get("robust_accuracy")))))
    if result.get("stopped_early"):
        tiles.append(("stopped early", "yes"))
    if result.get("rolled_back"):
        tiles.append(("rolled back to", f"epoch {plain(best)}"))
    return tiles


def _before_after(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[dict[str, str]]:
    if before is None and after is None:
        return []

    def metrics(result: Mapping[str, Any] | None) -> dict[str, float | None]:
        if result is None:
            return {}
        out: dict[str, float | None] = {"clean accuracy": num(result.get("clean_accuracy"))}
        for a in as_list(result.get("attacks")):
            if isinstance(a, Mapping):
                out[f"{attack_label(a)} eps={fmt(a.get('eps'))}"] = num(a.get("robust_accuracy"))
        for w in as_list(result.get("worst_case")):
            if isinstance(w, Mapping) and len(as_list(w.get("attacks"))) > 1:
                out[f"worst case {w.get('norm')} eps={fmt(w.get('eps'))}"] = num(w.get("robust_accuracy"))
        return out

    old, new = metrics(before), metrics(after)
    rows = []
    for name in dict.fromkeys([*old, *new]):
        b, a = old.get(name), new.get(name)
        change = f"{(a - b) * 100:+.1f} pts" if a is not None and b is not None else "—"
        rows.append({"metric": name, "before": pct(b), "after": pct(a), "change": change})
    return rows


def _before_after_curves(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[Markup]:
    series: dict[str, list[Series]] = {}
    for result, when, dashed in ((before, "before", True), (after, "after", False)):
        if result is None:
            continue
        clean = num(result.get("clean_accuracy"))
        groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for a in as_list(result.get("attacks")):
            if not isinstance(a, Mapping):
                continue
            eps, acc = num(a.get("eps")), num(a.get("robust_accuracy"))
            if eps is not None and acc is not None:
                groups.setdefault((str(a.get("norm", "linf")), attack_label(a)), []).append((eps, acc))
        for (norm, label), points in groups.items():
            color_index = sorted({lab for _, lab in groups}).index(label) % 4
            color = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")[color_index]
            series.setdefault(norm, []).append(
                Series(f"{label} ({when})", from_clean(points, clean), dashed=dashed, color=color)
            )
    return [
        line_chart(
            s,
            title=f"Robust accuracy before and after training ({norm})",
            x_label=f"eps ({norm})",
            y_label="robust accuracy",
        )  # fmt: skip
        for norm, s in sorted(series.items())
    ]
