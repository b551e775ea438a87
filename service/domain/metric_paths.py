"""Metric paths: the names thresholds give to one number of an evaluation result.

    clean_accuracy               the clean accuracy
    worst_case.<norm>.<eps>      the worst case over every attack at that norm and eps (worst_case.linf.0.3)
    attacks.<index>.<eps>        the robust accuracy of the index-th attack of the spec at that eps
    corruptions.mean_accuracy    the mean accuracy over the corruptions' items (a min is the issue's
                                 min_corruption_accuracy)
    corruptions.<name>.<severity>  the accuracy under one corruption at one severity (corruptions.contrast.5)

Standard library only: specs.py checks the syntax when a threshold is written, verdicts.py reads the number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from service.domain.corruptions import CORRUPTION_NAMES, SEVERITIES

MetricKind = Literal["clean_accuracy", "worst_case", "attacks", "corruptions"]
NORMS = ("linf", "l2")
EXAMPLES = (
    "clean_accuracy, worst_case.linf.0.3, attacks.0.0.3, corruptions.mean_accuracy or corruptions.contrast.5"
)
MEAN_CORRUPTION_ACCURACY = "mean_accuracy"


class MetricPathError(ValueError):
    """A path that names no metric; the message says how to write one."""


@dataclass(frozen=True)
class MetricPath:
    kind: MetricKind
    norm: str | None = None
    eps: float | None = None
    attack: int | None = None
    # corruptions: the corruption's name (None for the mean over every item) and its severity.
    corruption: str | None = None
    severity: int | None = None

    def __str__(self) -> str:
        if self.kind == "clean_accuracy":
            return self.kind
        if self.kind == "corruptions":
            if self.corruption is None:
                return f"corruptions.{MEAN_CORRUPTION_ACCURACY}"
            return f"corruptions.{self.corruption}.{self.severity}"
        middle = self.norm if self.kind == "worst_case" else str(self.attack)
        return f"{self.kind}.{middle}.{self.eps:g}"

    def matches_eps(self, eps: float) -> bool:
        return self.eps is not None and math.isclose(self.eps, eps, rel_tol=1e-9, abs_tol=1e-12)


def parse_metric(text: str) -> MetricPath:
    """`worst_case.linf.0.3` as a MetricPath; raises MetricPathError with a sentence."""
    path = text.strip()
    if path == "clean_accuracy":
        return MetricPath("clean_accuracy")
    if path.partition(".")[0] == "corruptions":
        return _corruption_path(text, path)
    head, _, rest = path.partition(".")
    middle, _, eps_text = rest.partition(".")  # the eps itself may hold a dot
    if head not in ("worst_case", "attacks") or not middle or not eps_text:
        raise MetricPathError(f"metric {text!r} names no result value; write {EXAMPLES}")
    try:
        eps = float(eps_text)
    except ValueError:
        raise MetricPathError(f"metric {text!r}: {eps_text!r} is not an eps value") from None
    if not math.isfinite(eps) or eps < 0:
        raise MetricPathError(f"metric {text!r}: eps must be a finite number of at least 0")
    if head == "worst_case":
        if middle not in NORMS:
            raise MetricPathError(f"metric {text!r}: the norm must be one of {', '.join(NORMS)}")
        return MetricPath("worst_case", norm=middle, eps=eps)
    if not middle.isdigit():
        raise MetricPathError(f"metric {text!r}: {middle!r} is not an attack index (0 for the first attack)")
    return MetricPath("attacks", eps=eps, attack=int(middle))


def _corruption_path(text: str, path: str) -> MetricPath:
    parts = path.split(".")
    if parts[1:] == [MEAN_CORRUPTION_ACCURACY]:
        return MetricPath("corruptions")
    if len(parts) != 3:
        raise MetricPathError(
            f"metric {text!r}: write corruptions.{MEAN_CORRUPTION_ACCURACY} or "
            "corruptions.<name>.<severity>, e.g. corruptions.contrast.5"
        )
    name, severity = parts[1], parts[2]
    if name not in CORRUPTION_NAMES:
        raise MetricPathError(
            f"metric {text!r}: unknown corruption {name!r}; known: {', '.join(CORRUPTION_NAMES)}"
        )
    if not severity.isdigit() or int(severity) not in SEVERITIES:
        raise MetricPathError(f"metric {text!r}: the severity must be 1 to 5")
    return MetricPath("corruptions", corruption=name, severity=int(severity))
