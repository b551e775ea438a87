"""Thresholds on metric paths (`worst_case.linf.0.3`): syntax, what a spec may name, and the verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.metric_paths import MetricPath, MetricPathError, parse_metric
from service.domain.specs import EvaluationSpec, Threshold
from service.domain.verdicts import outcomes_for_job
from tests.unit.check_helpers import fake_result

ATTACKS: list[dict[str, Any]] = [
    {"name": "pgd", "eps": [0.1, 0.3], "steps": 10},
    {"name": "fgsm", "eps": 0.3},
]


def _levels(name: str, eps: float) -> float:
    return {("pgd", 0.1): 0.7, ("pgd", 0.3): 0.4, ("fgsm", 0.3): 0.6}[(name, eps)]


@pytest.mark.parametrize(
    "text,path",
    [
        ("clean_accuracy", MetricPath("clean_accuracy")),
        ("worst_case.linf.0.3", MetricPath("worst_case", norm="linf", eps=0.3)),
        ("worst_case.l2.1", MetricPath("worst_case", norm="l2", eps=1.0)),
        ("attacks.1.0.3", MetricPath("attacks", eps=0.3, attack=1)),
    ],
)
def test_metric_paths_parse_and_print_back(text: str, path: MetricPath) -> None:
    assert parse_metric(text) == path
    assert parse_metric(str(path)) == path


@pytest.mark.parametrize(
    "text,message",
    [
        ("worst_case", "names no result value"),
        ("robust.linf.0.3", "names no result value"),
        ("worst_case.l7.0.3", "the norm must be one of linf, l2"),
        ("worst_case.linf.big", "'big' is not an eps value"),
        ("worst_case.linf.nan", "finite number"),
        ("attacks.first.0.3", "'first' is not an attack index"),
    ],
)
def test_bad_metric_paths_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(MetricPathError, match=message):
        parse_metric(text)


def test_a_threshold_is_one_form_or_the_other() -> None:
    assert Threshold(metric="worst_case.linf.0.3", min=0.8).path() == MetricPath("worst_case", "linf", 0.3)
    assert Threshold(attack=0, min_robust_accuracy=0.5).path() is None
    for bad, message in [
        ({"metric": "worst_case.linf.0.3"}, "needs min or max"),
        ({"metric": "clean_accuracy", "min": 0.5, "attack": 0}, "drop attack"),
        ({"attack": 0, "min": 0.5}, "needs attack and min_robust_accuracy, or metric"),
        ({"attack": 0, "min_robust_accuracy": 0.5, "max": 0.9}, "min and max go with metric"),
        ({"metric": "worst_case.linf.x", "min": 0.5}, "not an eps value"),
        ({"metric": "clean_accuracy", "min": 1.5}, "min 1.5 is above 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            Threshold.model_validate(bad)


def test_a_spec_may_only_name_values_its_evaluation_reports() -> None:
    base = {"model_id": "m", "dataset_id": "d", "attacks": ATTACKS}
    ok = [{"metric": "worst_case.linf.0.3", "min": 0.1}, {"metric": "attacks.0.0.1", "max": 0.9}]
    assert len(EvaluationSpec.model_validate({**base, "thresholds": ok}).thresholds) == 2
    for bad, message in [
        (
            {"metric": "worst_case.linf.0.2", "min": 0.1},
            "this evaluation has worst_case.linf.0.1, worst_case.linf.0.3",
        ),
        ({"metric": "worst_case.l2.0.3", "min": 0.1}, "no attack runs there"),
        ({"metric": "attacks.2.0.3", "min": 0.1}, "only 2 attacks"),
        ({"metric": "attacks.1.0.1", "min": 0.1}, "an eps attack 1 does not run"),
    ]:
        with pytest.raises(ValueError, match=message):
            EvaluationSpec.model_validate({**base, "thresholds": [bad]})


def test_a_worst_case_bar_is_a_check_of_its_own_after_the_attack_rows() -> None:
    result = fake_result(ATTACKS, _levels)  # worst case at linf 0.3: min(pgd 40%, fgsm 60%) = 40%
    spec = {
        "attacks": ATTACKS,
        "thresholds": [
            {"attack": 0, "min_robust_accuracy": 0.3},
            {"metric": "worst_case.linf.0.3", "min": 0.5},
        ],
    }
    outcomes = outcomes_for_job(spec, result)
    assert [o.name for o in outcomes] == [
        "pgd-10 linf eps=0.1",
        "pgd-10 linf eps=0.3",
        "fgsm linf eps=0.3",
        "worst case linf eps=0.3 (pgd, fgsm)",
    ]
    # The pgd bar keeps its meaning (both eps pass at 30%); the worst-case bar fails on its own.
    assert [o.passed for o in outcomes] == [True, True, True, False]
    worst = outcomes[-1]
    assert (worst.metric, worst.robust_accuracy, worst.min_robust_accuracy) == (
        "worst_case.linf.0.3",
        0.4,
        0.5,
    )
    assert worst.message == "worst_case.linf.0.3 is 40.0%, below the required 50.0%"
    assert worst.requirement() == "≥ 50.0%"


def test_max_bars_lower_bounds_and_names() -> None:
    result = fake_result(ATTACKS, _levels, num_samples=100)
    spec = {
        "attacks": ATTACKS,
        "thresholds": [
            {"metric": "attacks.0.0.1", "max": 0.65, "name": "pgd at 0.1 is not suspiciously high"},
            {"metric": "clean_accuracy", "min": 0.9, "use_lower_bound": True},
            {"metric": "worst_case.linf.0.1", "min": 0.6, "max": 0.8},
        ],
    }
    pgd_max, clean, both = outcomes_for_job(spec, result)[3:]
    assert pgd_max.name == "pgd at 0.1 is not suspiciously high" and not pgd_max.passed
    assert pgd_max.message == "attacks.0.0.1 is 70.0%, above the allowed 65.0%"
    # 95% of 100 samples: the estimate clears 90%, its Wilson lower bound (88.8%) does not.
    assert not clean.passed and "(95% CI 88.8%–97.8%)" in clean.message
    assert both.passed and both.requirement() == "≥ 60.0%, ≤ 80.0%"
    assert both.message.startswith("worst_case.linf.0.1 70.0% (95% CI")
