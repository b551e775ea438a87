"""The corruptions section of an evaluation page: accuracy against severity, one line per corruption."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.api.ui.svg import Series, line_chart
from service.api.ui.values import as_list, as_map, num, pct

_CLEAN = "#999999"


def corruptions_view(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The chart, tiles and table of `result.corruptions`, or None when the evaluation ran none."""
    section = as_map(result.get("corruptions"))
    if not section:
        return None
    by_name: dict[str, list[tuple[float, float]]] = {}
    for item in as_list(section.get("items")):
        if not isinstance(item, Mapping):
            continue
        severity, accuracy = num(item.get("severity")), num(item.get("accuracy"))
        if severity is not None and accuracy is not None:
            by_name.setdefault(str(item.get("name")), []).append((severity, accuracy))
    severities = sorted({s for points in by_name.values() for s, _ in points})
    series = [Series(name, points) for name, points in by_name.items()]
    clean = num(result.get("clean_accuracy"))
    if clean is not None and severities:
        series.append(Series("clean", [(severities[0], clean), (severities[-1], clean)], dashed=True,
                             color=_CLEAN))  # fmt: skip
    chart = line_chart(
        series,
        title="Accuracy under common corruptions",
        x_label="severity",
        y_label="accuracy",
        x_ticks=severities,
        height=320,
    )
    relative = num(section.get("relative_error"))
    tiles = [
        ("mean corruption accuracy", pct(num(section.get("mean_accuracy")))),
        ("relative error", "—" if relative is None else f"{relative:.2f}×"),
    ]
    rows = [(name, [pct(dict(points).get(s)) for s in severities]) for name, points in by_name.items()]
    skipped = [str(s) for s in as_list(section.get("skipped"))]
    return {"chart": chart, "tiles": tiles, "severities": [f"{s:g}" for s in severities], "rows": rows,
            "skipped": skipped}  # fmt: skip
