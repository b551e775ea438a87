"""Server-rendered SVG charts: lines (robust accuracy against eps, training curves) and grouped bars.

Plain strings, no plotting library: the API process stays light and the pages need no script to draw.
Every piece of text goes through `escape`, since series labels can come from user input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D1F", "#999999")
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 196, 30, 46


@dataclass(frozen=True)
class Series:
    """One line: its label in the legend and its (x, y) points."""

    label: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    color: str | None = None


@dataclass(frozen=True)
class Bars:
    """One bar per category (None: no bar), drawn side by side with the other Bars of the chart."""

    label: str
    values: Sequence[float | None]
    color: str | None = None


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = (0.0, 1.0),
    percent: bool = True,
    x_ticks: Sequence[float] | None = None,
    width: int = 560,
    height: int = 300,
) -> Markup:
    """An SVG line chart with axes, ticks, a legend and a tooltip (<title>) on every point."""
    drawn = [s for s in series if s.points]
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points if math.isfinite(y)]
    if not xs or not ys:
        return _empty(title, width, height)
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_lo, y_hi = y_range if y_range is not None else _padded(min(ys), max(ys))
    plot = _Frame(width, height, (x_lo, x_hi), (y_lo, y_hi))
    parts = [_open(title, width, height), plot.axes(x_label, y_label)]
    parts += plot.y_ticks(_nice_ticks(y_lo, y_hi), percent)
    parts += plot.x_ticks(x_ticks if x_ticks is not None else _nice_ticks(x_lo, x_hi))
    for i, s in enumerate(drawn):
        color = s.color or PALETTE[i % len(PALETTE)]
        points = [(x, y) for x, y in sorted(s.points) if math.isfinite(y)]
        coords = " ".join(f"{plot.px(x):.1f},{plot.py(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(
            f'<polyline class="series" data-label="{escape(s.label)}" points="{coords}" fill="none" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        for x, y in points:
            tip = f"{s.label}: {_fmt(x)} → {_value(y, percent)}"
            parts.append(
                f'<circle cx="{plot.px(x):.1f}" cy="{plot.py(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        parts.append(_legend_entry(width, i, s.label, color, dashed=s.dashed))
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    categories: Sequence[str],
    bars: Sequence[Bars],
    *,
    title: str,
    x_label: str,
    y_label: str,
    percent: bool = True,
    width: int = 560,
    height: int = 300,
) -> Markup:
    """An SVG grouped bar chart on a 0..1 scale: one group per category, one bar per `Bars`."""
    if not categories or not bars:
        return _empty(title, width, height)
    plot = _Frame(width, height, (0.0, float(len(categories))), (0.0, 1.0))
    parts = [_open(title, width, height), plot.axes(x_label, y_label)]
    parts += plot.y_ticks(_nice_ticks(0.0, 1.0), percent)
    group = plot.inner_width / len(categories)
    bar_width = group * 0.8 / len(bars)
    for c, category in enumerate(categories):
        center = plot.px(c + 0.5)
        parts.append(
            f'<text x="{center:.1f}" y="{plot.bottom + 16}" text-anchor="middle">{escape(category)}</text>'
        )
        for b, series in enumerate(bars):
            value = series.values[c] if c < len(series.values) else None
            if value is None or not math.isfinite(value):
                continue
            color = series.color or PALETTE[b % len(PALETTE)]
            x = plot.px(c) + group * 0.1 + b * bar_width
            top = plot.py(min(max(value, 0.0), 1.0))
            tip = f"{series.label}, {category}: {_value(value, percent)}"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{max(bar_width - 1, 1):.1f}" '
                f'height="{max(plot.bottom - top, 0.0):.1f}" fill="{color}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    for b, series in enumerate(bars):
        parts.append(_legend_entry(width, b, series.label, series.color or PALETTE[b % len(PALETTE)]))
    parts.append("</svg>")
    return Markup("".join(parts))


class _Frame:
    """Maps data coordinates to pixels inside the margins."""

    def __init__(self, width: int, height: int, x: tuple[float, float], y: tuple[float, float]) -> None:
        self.left, self.right = _LEFT, width - _RIGHT
        self.top, self.bottom = _TOP, height - _BOTTOM
        self.inner_width = self.right - self.left
        self.x, self.y = x, y

    def px(self, value: float) -> float:
        lo, hi = self.x
        return self.left + (value - lo) / (hi - lo) * self.inner_width

    def py(self, value: float) -> float:
        lo, hi = self.y
        return self.bottom - (value - lo) / (hi - lo) * (self.bottom - self.top)

    def axes(self, x_label: str, y_label: str) -> str:
        mid_y = (self.top + self.bottom) / 2
        return (
            f'<line class="axis" x1="{self.left}" y1="{self.bottom}" x2="{self.right}" y2="{self.bottom}"/>'
            f'<line class="axis" x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{self.bottom}"/>'
            f'<text x="{(self.left + self.right) / 2:.1f}" y="{self.bottom + 36}" text-anchor="middle">'
            f"{escape(x_label)}</text>"
            f'<text x="12" y="{mid_y:.1f}" text-anchor="middle" transform="rotate(-90 12 {mid_y:.1f})">'
            f"{escape(y_label)}</text>"
        )

    def y_ticks(self, ticks: Sequence[float], percent: bool) -> list[str]:
        out = []
        for t in ticks:
            y = self.py(t)
            out.append(
                f'<line class="grid" x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}"/>'
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{escape(_value(t, percent))}</text>"
            )
        return out

    def x_ticks(self, ticks: Sequence[float]) -> list[str]:
        out = []
        for t in ticks:
            x = self.px(t)
            out.append(
                f'<line class="axis" x1="{x:.1f}" y1="{self.bottom}" x2="{x:.1f}" y2="{self.bottom + 4}"/>'
                f'<text x="{x:.1f}" y="{self.bottom + 17}" text-anchor="middle">{escape(_fmt(t))}</text>'
            )
        return out


def _open(title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text class="chart-title" x="{_LEFT}" y="18">{escape(title)}</text>'
    )


def _empty(title: str, width: int, height: int) -> Markup:
    return Markup(
        f'{_open(title, width, height)}<text x="{width / 2:.0f}" y="{height / 2:.0f}" '
        'text-anchor="middle">no data</text></svg>'
    )


def _legend_entry(width: int, index: int, label: str, color: str, *, dashed: bool = False) -> str:
    x, y = width - _RIGHT + 16, _TOP + 6 + index * 18
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    shown = label if len(label) <= 26 else label[:25] + "…"
    return (
        f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{color}" stroke-width="3"{dash}/>'
        f'<text class="legend" x="{x + 24}" y="{y + 4}">{escape(shown)}<title>{escape(label)}</title></text>'
    )


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if hi == lo:
        return lo - 1.0, hi + 1.0
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return [lo]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _value(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}%" if percent else _fmt(value)
