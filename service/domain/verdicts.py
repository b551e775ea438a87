"""Verdicts: an evaluation result judged against thresholds (with sampling noise) and a baseline run.

Pure functions, result in and outcomes out, so `parry check` and the report route give the same verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from service.domain.attack_syntax import describe_validation_error
from service.domain.metric_paths import MetricPath
from service.domain.results import AttackResult, EvaluationResult
from service.domain.specs import ATTACK_SPECS, AttackSpec, AttackSpecUnion, Threshold
from service.domain.stats import accuracy_interval

DEFAULT_TOLERANCE = 0.02
NO_THRESHOLDS = "no thresholds set"
_ATTACK_ADAPTER: TypeAdapter[AttackSpecUnion] = TypeAdapter(AttackSpec)


class BaselineError(ValueError):
    """A baseline that cannot be compared with; the message is one sentence."""


@dataclass
class CheckOutcome:
    """The verdict on one attack at one eps: its numbers, its bars, and one sentence saying why."""

    name: str
    attack: str
    norm: str
    eps: float
    robust_accuracy: float
    ci95: tuple[float, float]
    num_samples: int
    min_robust_accuracy: float | None = None
    use_lower_bound: bool = False
    baseline_robust_accuracy: float | None = None
    max_regression: float | None = None
    passed: bool = True
    message: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    # A metric threshold's check (`worst_case.linf.0.3`): its path and its upper bar, if any.
    metric: str | None = None
    max_value: float | None = None
    # The value is a norm (minimum_norm.*): shown as a number, with no interval; inf when none was found.
    is_norm: bool = False

    def shown(self, value: float) -> str:
        """A value of this check as reports print it: a percentage, or a norm."""
        return norm_text(value) if self.is_norm else pct(value)

    def requirement(self) -> str:
        """`≥ 80.0%`, `≤ 5.0%`, both, or empty: the bars this check applies."""
        bars = []
        if self.min_robust_accuracy is not None:
            bars.append(f"≥ {self.shown(self.min_robust_accuracy)}")
        if self.max_value is not None:
            bars.append(f"≤ {self.shown(self.max_value)}")
        return ", ".join(bars)

    @property
    def regression(self) -> float | None:
        if self.baseline_robust_accuracy is None:
            return None
        return self.baseline_robust_accuracy - self.robust_accuracy

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["ci95"] = list(self.ci95)
        if self.is_norm:  # JSON has no infinity: null is "no adversarial found"
            body["robust_accuracy"] = _finite_or_none(self.robust_accuracy)
            body["ci95"] = [_finite_or_none(v) for v in self.ci95]
        body["regression"] = self.regression
        return body


def is_judged(outcome: CheckOutcome) -> bool:
    """Whether a bar (a threshold, a baseline row) judged the outcome: one that none did neither passed nor
    failed, and reports say so instead of "passed"."""
    return bool(outcome.problems) or (
        outcome.min_robust_accuracy is not None
        or outcome.max_value is not None
        or outcome.baseline_robust_accuracy is not None
    )


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def norm_text(value: float) -> str:
    """A norm as reports print it: 4 significant digits, ∞ when no adversarial was found."""
    return f"{value:.4g}" if math.isfinite(value) else "∞"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def attack_label(name: str, spec: dict[str, Any]) -> str:
    """`pgd-20`, `pgd-40×5 cw`, `fgsm (targeted)`: enough to tell the attacks of one report apart."""
    kind = ATTACK_SPECS.get(name)
    if kind is None:  # a row from a newer server: its name is all we know
        return name + (" (targeted)" if spec.get("targeted") else "")
    return kind.label_of(spec)


def robust_interval(row: Any, num_samples: int) -> tuple[float, float]:
    """The 95% interval the worker reported (`robust_accuracy_ci95`), else Wilson's from the counts."""
    reported = getattr(row, "robust_accuracy_ci95", None)
    if reported is not None and len(reported) == 2:
        return float(reported[0]), float(reported[1])
    return accuracy_interval(row.robust_accuracy, num_samples)


def judge(
    result: EvaluationResult,
    attacks: Sequence[AttackSpecUnion],
    thresholds: Sequence[Threshold] = (),
    *,
    baseline: EvaluationResult | None = None,
    max_regression: Sequence[float] | float = DEFAULT_TOLERANCE,
) -> list[CheckOutcome]:
    """One outcome per attack × eps of `result` (in its order), judged against the thresholds and baseline.

    `attacks` are the evaluation's attack specs (result rows come in their order, every eps of one attack
    in turn); `max_regression` is one tolerance for all attacks or one per attack.
    """
    origins = _row_origins(result, attacks)
    outcomes = []
    for row, (index, eps) in zip(result.attacks, origins, strict=True):
        ci = robust_interval(row, result.num_samples)
        outcome = CheckOutcome(
            name=f"{attack_label(row.name, row.spec)} {row.norm} eps={row.eps:g}",
            attack=row.name,
            norm=row.norm,
            eps=row.eps,
            robust_accuracy=row.robust_accuracy,
            ci95=ci,
            num_samples=result.num_samples,
            seconds=row.seconds,
        )
        bars = [
            t
            for t in thresholds
            if t.metric is None and t.attack == index and (t.eps is None or math.isclose(t.eps, eps))
        ]
        for bar in bars:
            _apply_threshold(outcome, bar)
        if baseline is not None:
            tolerance = max_regression if isinstance(max_regression, float | int) else max_regression[index]
            _apply_baseline(outcome, row, baseline, float(tolerance))
        outcomes.append(_concluded(outcome))
    # Metric bars are checks of their own, after the attacks' rows: a worst-case bar never replaces one.
    outcomes += [_metric_outcome(result, bar, origins) for bar in thresholds if bar.metric is not None]
    return outcomes


def _concluded(outcome: CheckOutcome) -> CheckOutcome:
    outcome.passed = not outcome.problems
    outcome.message = "; ".join(outcome.problems) if outcome.problems else _pass_message(outcome)
    return outcome


def _metric_outcome(
    result: EvaluationResult, bar: Threshold, origins: Sequence[tuple[int, float]]
) -> CheckOutcome:
    """The check of a metric threshold: the value its path names, against its min and max."""
    path = bar.path()
    assert path is not None
    n = result.num_samples
    outcome = CheckOutcome(
        name=bar.name or str(path), attack=path.kind, norm=path.norm or "", eps=path.eps or 0.0,
        robust_accuracy=0.0, ci95=(0.0, 0.0), num_samples=n, use_lower_bound=bar.use_lower_bound,
        metric=str(path), min_robust_accuracy=bar.min, max_value=bar.max,
    )  # fmt: skip
    outcome.is_norm = path.is_norm
    found = _metric_row(result, path, origins)
    if found is None:
        outcome.problems.append(f"the result has no value for {path}")
        return _concluded(outcome)
    label, value, ci = found
    outcome.name = bar.name or label
    outcome.robust_accuracy, outcome.ci95 = value, ci
    lo, hi = ci
    judged_low, judged_high = (lo, hi) if bar.use_lower_bound else (value, value)
    which = f" (95% CI {pct(lo)}–{pct(hi)})" if bar.use_lower_bound and not path.is_norm else ""
    shown = outcome.shown
    if bar.min is not None and judged_low < bar.min - 1e-12:
        outcome.problems.append(f"{path} is {shown(value)}{which}, below the required {shown(bar.min)}")
    if bar.max is not None and judged_high > bar.max + 1e-12:
        outcome.problems.append(f"{path} is {shown(value)}{which}, above the allowed {shown(bar.max)}")
    return _concluded(outcome)


def _metric_row(
    result: EvaluationResult, path: MetricPath, origins: Sequence[tuple[int, float]]
) -> tuple[str, float, tuple[float, float]] | None:
    """What a path names in a result: a label for reports, the value, its 95% interval."""
    n = result.num_samples
    if path.kind == "clean_accuracy":
        return "clean accuracy", result.clean_accuracy, accuracy_interval(result.clean_accuracy, n)
    if path.kind in ("ood", "calibration"):
        found = natural_value(result, path)
        # No sampling interval is computed for these figures: the bar judges the estimate itself.
        return None if found is None else (found[0], found[1], (found[1], found[1]))
    if path.kind == "corruptions":
        return _corruption_row(result, path)
    if path.kind == "worst_case":
        for worst in result.worst_case:
            if worst.norm == path.norm and path.matches_eps(worst.eps):
                names = ", ".join(dict.fromkeys(worst.attacks))
                label = f"worst case {worst.norm} eps={worst.eps:g} ({names})"
                return label, worst.robust_accuracy, robust_interval(worst, n)
        return None
    if path.kind == "minimum_norm":
        return _minimum_norm_value(result, path)
    for row, (index, eps) in zip(result.attacks, origins, strict=True):
        if index == path.attack and path.matches_eps(eps):
            label = f"{attack_label(row.name, row.spec)} {row.norm} eps={row.eps:g}"
            return label, row.robust_accuracy, robust_interval(row, n)
    return None


def natural_value(result: EvaluationResult, path: MetricPath) -> tuple[str, float] | None:
    """A label and the value of an `ood.*` or `calibration.*` path, or None when the result lacks it."""
    if path.kind == "calibration":
        if result.calibration is None or path.figure is None:
            return None
        return f"calibration {path.figure}", float(getattr(result.calibration, path.figure))
    for row in result.ood or []:
        if row.score == path.score and path.figure is not None:
            return f"OOD {row.score} {path.figure}", float(getattr(row, path.figure))
    return None


def _minimum_norm_value(
    result: EvaluationResult, path: MetricPath
) -> tuple[str, float, tuple[float, float]] | None:
    """The statistic of the matching minimum-norm entries (the smallest, when the attack ran twice);
    a null statistic (more samples unbroken than its rank) is infinite."""
    values = []
    for entry in result.minimum_norm:
        if entry.name == path.attack_name and entry.norm == path.norm:
            assert path.statistic is not None
            if path.statistic in ("median", "mean"):
                value = getattr(entry, path.statistic)
            else:
                value = getattr(entry.quantiles, path.statistic)
            values.append((math.inf if value is None else float(value), entry))
    if not values:
        return None
    value, entry = min(values, key=lambda pair: pair[0])
    label = f"{attack_label(entry.name, entry.spec)} {entry.norm} {path.statistic} minimal norm"
    return label, value, (value, value)


def _corruption_row(
    result: EvaluationResult, path: MetricPath
) -> tuple[str, float, tuple[float, float]] | None:
    corruptions, n = result.corruptions, result.num_samples
    if corruptions is None:
        return None
    if path.corruption is None:
        # The interval of an accuracy on n samples: each item's is, and their mean is no wider.
        value = corruptions.mean_accuracy
        return "mean corruption accuracy", value, accuracy_interval(value, n)
    for item in corruptions.items:
        if item.name == path.corruption and item.severity == path.severity:
            return f"{item.name} severity {item.severity}", item.accuracy, accuracy_interval(item.accuracy, n)
    return None


def _row_origins(result: EvaluationResult, attacks: Sequence[AttackSpecUnion]) -> list[tuple[int, float]]:
    origins = [(i, eps) for i, spec in enumerate(attacks) for eps in spec.eps_values()]
    if len(origins) != len(result.attacks) or any(
        row.name != attacks[i].name or not math.isclose(row.eps, eps)
        for row, (i, eps) in zip(result.attacks, origins, strict=False)
    ):
        raise ValueError("the result does not hold one row per attack and eps of the evaluation's spec")
    return origins


def _apply_threshold(outcome: CheckOutcome, bar: Threshold) -> None:
    assert bar.min_robust_accuracy is not None  # an attack's bar (Threshold's validator holds it)
    outcome.min_robust_accuracy = max(outcome.min_robust_accuracy or 0.0, bar.min_robust_accuracy)
    outcome.use_lower_bound = outcome.use_lower_bound or bar.use_lower_bound
    if bar.name and not outcome.name.startswith(bar.name):
        outcome.name = f"{bar.name}: {outcome.name}"
    if bar.use_lower_bound:
        lo, hi = outcome.ci95
        if lo < bar.min_robust_accuracy:
            outcome.problems.append(
                f"robust accuracy {pct(outcome.robust_accuracy)} (95% CI {pct(lo)}–{pct(hi)}, "
                f"{outcome.num_samples} samples): the lower bound is below the required "
                f"{pct(bar.min_robust_accuracy)}"
            )
    elif outcome.robust_accuracy < bar.min_robust_accuracy:
        outcome.problems.append(
            f"robust accuracy {pct(outcome.robust_accuracy)} is below the required "
            f"{pct(bar.min_robust_accuracy)}"
        )


def _apply_baseline(
    outcome: CheckOutcome, row: AttackResult, baseline: EvaluationResult, tolerance: float
) -> None:
    match = _baseline_row(row, baseline)
    outcome.max_regression = tolerance
    if match is None:
        return
    outcome.baseline_robust_accuracy = match.robust_accuracy
    drop = match.robust_accuracy - row.robust_accuracy
    if drop > tolerance + 1e-9:
        outcome.problems.append(
            f"robust accuracy fell from {pct(match.robust_accuracy)} (baseline) to "
            f"{pct(row.robust_accuracy)}, "
            f"a drop of {100 * drop:.1f} points, more than the tolerance of {100 * tolerance:.1f}"
        )


def _baseline_row(row: AttackResult, baseline: EvaluationResult) -> AttackResult | None:
    """The baseline's row for the same attack, norm, eps and attack settings."""
    for candidate in baseline.attacks:
        if (candidate.name, candidate.norm) == (row.name, row.norm) and math.isclose(candidate.eps, row.eps):
            if _comparable(candidate.spec) == _comparable(row.spec):
                return candidate
    return None


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in ("eps",)}


def _pass_message(outcome: CheckOutcome) -> str:
    lo, hi = outcome.ci95
    what = outcome.metric or "robust accuracy"
    text = f"{what} {pct(outcome.robust_accuracy)}"
    if outcome.is_norm:
        text = f"{what} {norm_text(outcome.robust_accuracy)}"
    elif lo < hi:  # OOD and calibration figures come without an interval
        text += f" (95% CI {pct(lo)}–{pct(hi)})"
    if outcome.metric is not None:
        text += f", within the bars {outcome.requirement()}"
        if outcome.use_lower_bound:
            text += " (judged on the 95% interval)"
    elif outcome.min_robust_accuracy is not None:
        what = "lower bound" if outcome.use_lower_bound else "estimate"
        text += f", {what} at or above the required {pct(outcome.min_robust_accuracy)}"
    if outcome.baseline_robust_accuracy is not None:
        text += f", baseline {pct(outcome.baseline_robust_accuracy)}"
    return text


def outcomes_for_job(spec: dict[str, Any], result: EvaluationResult) -> list[CheckOutcome]:
    """The verdicts of a stored evaluation job: its spec's thresholds applied to its result."""
    attacks = [_ATTACK_ADAPTER.validate_python(a) for a in spec.get("attacks", [])]
    thresholds = [Threshold.model_validate(t) for t in spec.get("thresholds", [])]
    return judge(result, attacks, thresholds)


def baseline_result(data: Any) -> EvaluationResult:
    """An EvaluationResult from what a baseline file may hold: a result, a job, or a `parry check --json`."""
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    try:
        return EvaluationResult.model_validate(data)
    except ValidationError as exc:
        raise BaselineError(
            f"the baseline is not an evaluation result ({describe_validation_error(exc)})"
        ) from None
