"""The headline of an evaluation: the one robust-accuracy figure a report quotes first, per norm.

When `autoattack` ran, the headline is the worst case at its largest eps (every attack at that norm and
eps, the ensemble included). Without it the headline is the worst case at the largest eps, marked as a
sanity figure: PGD and FGSM alone overstate robustness (by 3 to 90 points in the cases of issue 13), so
they are no robustness claim. Reads results as plain mappings, so the HTML page can show stored results
of any version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STRONG_ATTACK = "autoattack"
SANITY_NOTE = "PGD/FGSM only: a sanity check, not a robustness claim; run autoattack for a figure to quote"


@dataclass(frozen=True)
class Headline:
    norm: str
    eps: float
    robust_accuracy: float
    ci95: tuple[float, float] | None
    attacks: tuple[str, ...]
    strong: bool  # autoattack ran at this norm and eps

    def title(self) -> str:
        """`robust accuracy, linf eps=0.3 (autoattack worst case)`."""
        source = "autoattack worst case" if self.strong else f"worst case of {', '.join(self.attacks)}"
        return f"robust accuracy, {self.norm} eps={self.eps:g} ({source})"

    def note(self) -> str:
        return "" if self.strong else SANITY_NOTE

    def sentence(self) -> str:
        """The headline as one line for a terminal: title, figure, and the sanity note when it applies."""
        text = f"{self.title()}: {100 * self.robust_accuracy:.1f}%"
        return text + (f" ({self.note()})" if self.note() else "")


def headlines(result: Mapping[str, Any]) -> list[Headline]:
    """One headline per norm of the result (in norm order), from its worst-case rows."""
    worst = [w for w in _rows(result.get("worst_case")) if _number(w.get("eps")) is not None]
    strong = {
        (str(a.get("norm")), float(eps))
        for a in _rows(result.get("attacks"))
        if a.get("name") == STRONG_ATTACK and (eps := _number(a.get("eps"))) is not None
    }
    found = []
    for norm in sorted({str(w.get("norm")) for w in worst}):
        group = [w for w in worst if str(w.get("norm")) == norm]
        quoted = [w for w in group if (norm, _number(w.get("eps"))) in strong] or group
        top = max(quoted, key=lambda w: _number(w.get("eps")) or 0.0)
        accuracy = _number(top.get("robust_accuracy"))
        if accuracy is None:
            continue
        eps = _number(top.get("eps")) or 0.0
        ci = top.get("robust_accuracy_ci95")
        found.append(
            Headline(
                norm=norm,
                eps=eps,
                robust_accuracy=accuracy,
                ci95=(float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) and len(ci) == 2 else None,
                attacks=tuple(dict.fromkeys(str(n) for n in _list(top.get("attacks")))),
                strong=(norm, eps) in strong,
            )
        )
    return found


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [row for row in _list(value) if isinstance(row, Mapping)]


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
