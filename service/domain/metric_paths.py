"""Metric paths: the names thresholds give to one number of an evaluation result.

    clean_accuracy               the clean accuracy
    worst_case.<norm>.<eps>      the worst case over every attack at that norm and eps (worst_case.linf.0.3)
    attacks.<index>.<eps>        the robust accuracy of the index-th attack of the spec at that eps
    ood.<score>.<figure>         an OOD detection figure (ood.energy.auroc; figures: OOD_FIGURES)
    calibration.<figure>         calibration.ece or calibration.rms_calibration_error
    minimum_norm.<attack>.<norm>.<statistic>
                                 a minimum-norm attack's statistic of the minimal norms: median, mean,
                                 p10, p25, p75 or p90 (minimum_norm.cw.l2.median); a norm, not a share
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

MetricKind = Literal[
    "clean_accuracy", "worst_case", "attacks", "ood", "calibration", "minimum_norm", "corruptions"
]
NORMS = ("linf", "l2")
MINIMUM_NORMS = ("linf", "l2", "l1")
STATISTICS = ("median", "mean", "p10", "p25", "p75", "p90")
OOD_SCORE_NAMES = ("msp", "max_logit", "energy")  # specs.OODScore's values (specs imports this module)
OOD_FIGURES = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")
CALIBRATION_FIGURES = ("ece", "rms_calibration_error")
EXAMPLES = (
    "clean_accuracy, worst_case.linf.0.3, attacks.0.0.3, ood.msp.auroc, calibration.ece, "
    "corruptions.mean_accuracy, corruptions.contrast.5 or minimum_norm.cw.l2.median"
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
    score: str | None = None  # ood: the score's name
    figure: str | None = None  # ood and calibration: which of their figures
    attack_name: str | None = None  # minimum_norm only
    statistic: str | None = None  # minimum_norm only

    @property
    def is_norm(self) -> bool:
        """The value is a distance (any size), not an accuracy in [0, 1]."""
        return self.kind == "minimum_norm"

    # corruptions: the corruption's name (None for the mean over every item) and its severity.
    corruption: str | None = None
    severity: int | None = None

    def __str__(self) -> str:
        if self.kind == "clean_accuracy":
            return self.kind
        if self.kind == "ood":
            return f"ood.{self.score}.{self.figure}"
        if self.kind == "calibration":
            return f"calibration.{self.figure}"
        if self.kind == "minimum_norm":
            return f"minimum_norm.{self.attack_name}.{self.norm}.{self.statistic}"
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
    if path.startswith("minimum_norm."):
        return _minimum_norm(text, path)
    if path.partition(".")[0] == "corruptions":
        return _corruption_path(text, path)
    head, _, rest = path.partition(".")
    if head in ("ood", "calibration"):
        return _natural_path(text, head, rest)
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


def _natural_path(text: str, head: str, rest: str) -> MetricPath:
    """`ood.<score>.<figure>` or `calibration.<figure>`."""
    if head == "calibration":
        if rest not in CALIBRATION_FIGURES:
            raise MetricPathError(
                f"metric {text!r}: write calibration.{' or calibration.'.join(CALIBRATION_FIGURES)}"
            )
        return MetricPath("calibration", figure=rest)
    score, _, figure = rest.partition(".")
    if score not in OOD_SCORE_NAMES:
        raise MetricPathError(f"metric {text!r}: the OOD score must be one of {', '.join(OOD_SCORE_NAMES)}")
    if figure not in OOD_FIGURES:
        raise MetricPathError(f"metric {text!r}: the OOD figure must be one of {', '.join(OOD_FIGURES)}")
    return MetricPath("ood", score=score, figure=figure)


def _minimum_norm(text: str, path: str) -> MetricPath:
    parts = path.split(".")
    if len(parts) != 4 or not parts[1]:
        raise MetricPathError(
            f"metric {text!r}: write minimum_norm.<attack>.<norm>.<statistic>, e.g. minimum_norm.cw.l2.median"
        )
    _, name, norm, statistic = parts
    if norm not in MINIMUM_NORMS:
        raise MetricPathError(f"metric {text!r}: the norm must be one of {', '.join(MINIMUM_NORMS)}")
    if statistic not in STATISTICS:
        raise MetricPathError(f"metric {text!r}: the statistic must be one of {', '.join(STATISTICS)}")
    return MetricPath("minimum_norm", norm=norm, attack_name=name, statistic=statistic)


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
