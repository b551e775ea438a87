"""A minimum-norm attack on the report page: its robustness curve, the bounded attacks' points at their eps
overlaid, and a table of its norm statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from service.api.ui.svg import Series, line_chart
from service.api.ui.values import as_list, as_map, num

_CURVE = "#000000"


def _norm(value: Any) -> str:
    number = num(value)
    return "∞" if number is None else f"{number:.4g}"


def steps(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The curve as the step function it is: accuracy drops at each minimal norm and stays until the next."""
    drawn: list[tuple[float, float]] = []
    for eps, accuracy in points:
        if drawn:
            drawn.append((eps, drawn[-1][1]))
        drawn.append((eps, accuracy))
    return drawn


def minimum_norm_view(result: Mapping[str, Any], *, title_prefix: str = "") -> dict[str, Any]:
    """Charts (one per minimum-norm entry) and table rows for `result.minimum_norm`."""
    entries = [e for e in as_list(result.get("minimum_norm")) if isinstance(e, Mapping)]
    attacks = [a for a in as_list(result.get("attacks")) if isinstance(a, Mapping)]
    charts, rows = [], []
    for entry in entries:
        norm = str(entry.get("norm", ""))
        name = str(entry.get("name", "?"))
        curve = [
            (e, r)
            for p in as_list(entry.get("curve"))
            if isinstance(p, Mapping)
            if (e := num(p.get("eps"))) is not None and (r := num(p.get("robust_accuracy"))) is not None
        ]
        series = [Series(f"{name} minimal norms", steps(curve), color=_CURVE)]
        bounded: dict[str, list[tuple[float, float]]] = {}
        for a in attacks:
            eps, acc = num(a.get("eps")), num(a.get("robust_accuracy"))
            if a.get("norm") != norm or a.get("name") == name or eps is None or acc is None:
                continue
            bounded.setdefault(f"{a.get('name')} at its eps", []).append((eps, acc))
        series += [Series(label, sorted(points), dashed=True) for label, points in bounded.items()]
        charts.append(
            line_chart(
                series,
                title=f"{title_prefix}Robust accuracy from {name}'s minimal norms ({norm})",
                x_label=f"eps ({norm})",
                y_label="robust accuracy",
            )
        )
        quantiles = as_map(entry.get("quantiles"))
        rows.append(
            {
                "name": name,
                "norm": norm,
                "median": _norm(entry.get("median")),
                "mean": "—" if entry.get("mean") is None else _norm(entry.get("mean")),
                "quantiles": " / ".join(_norm(quantiles.get(k)) for k in ("p10", "p25", "p75", "p90")),
                "found": f"{entry.get('num_found', '?')}/{entry.get('num_attacked', '?')}",
            }
        )
    return {"charts": [Markup(c) for c in charts], "rows": rows}
