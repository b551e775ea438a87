"""Bars on minimal norms (`minimum_norm.cw.l2.median`, `min_median_norm`): syntax, the [0, 1] rule that only
norms escape, what a spec may name, the verdicts, and the reports (no TensorFlow involved)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.cli.config import CheckConfigError, load_config
from service.domain.metric_paths import MetricPath, MetricPathError, parse_metric
from service.domain.results import EvaluationResult
from service.domain.specs import EvaluationSpec, Threshold
from service.domain.verdicts import outcomes_for_job
from service.reports import junit, markdown
from tests.unit.check_helpers import fake_result

ATTACKS: list[dict[str, Any]] = [{"name": "pgd", "eps": 1.0, "norm": "l2"}, {"name": "cw", "eps": [1.0]}]


def with_norms(median: float | None, p90: float | None = 3.0) -> EvaluationResult:
    result = fake_result(ATTACKS)
    entry = {
        "name": "cw", "norm": "l2", "attack": 1, "spec": {"name": "cw"}, "median": median, "mean": 1.4,
        "quantiles": {"p10": 0.5, "p25": 0.9, "p75": 2.0, "p90": p90},
        "curve": [{"eps": 0.0, "robust_accuracy": 0.95}, {"eps": 1.5, "robust_accuracy": 0.4}],
        "num_attacked": 190, "num_found": 180, "seconds": 2.0,
        "cost": {
            "forward_passes": 1, "backward_passes": 1, "forward_per_sample": 1, "backward_per_sample": 1,
        },
    }  # fmt: skip
    return EvaluationResult.model_validate({**result.model_dump(), "minimum_norm": [entry]})


def spec(*thresholds: dict[str, Any]) -> dict[str, Any]:
    return {"model_id": "m", "dataset_id": "d", "attacks": ATTACKS, "thresholds": list(thresholds)}


def test_the_path_parses_and_prints_back_and_bad_ones_say_why() -> None:
    path = parse_metric("minimum_norm.cw.l2.median")
    assert (
        path == MetricPath("minimum_norm", norm="l2", attack_name="cw", statistic="median") and path.is_norm
    )
    assert str(path) == "minimum_norm.cw.l2.median"
    assert parse_metric("minimum_norm.fmn.l1.p90").statistic == "p90"
    for bad, message in [
        ("minimum_norm.cw.l2", "minimum_norm.<attack>.<norm>.<statistic>"),
        ("minimum_norm.cw.l3.median", "the norm must be one of"),
        ("minimum_norm.cw.l2.mode", "the statistic must be one of"),
    ]:
        with pytest.raises(MetricPathError, match=message):
            parse_metric(bad)


def test_values_above_one_are_for_norms_only() -> None:
    assert Threshold(metric="minimum_norm.cw.l2.median", min=1.5).min == 1.5
    with pytest.raises(ValidationError, match="only minimum_norm.* metrics, which are norms, take values"):
        Threshold(metric="worst_case.l2.1", min=1.5)


def test_a_spec_may_only_bar_a_minimum_norm_attack_it_runs() -> None:
    EvaluationSpec.model_validate(spec({"metric": "minimum_norm.cw.l2.median", "min": 1.5}))
    with pytest.raises(ValidationError, match="no such attack runs; this evaluation has minimum_norm.cw.l2"):
        EvaluationSpec.model_validate(spec({"metric": "minimum_norm.fmn.l2.median", "min": 1.5}))


@pytest.mark.parametrize(
    "median,bar,passed", [(1.6, 1.5, True), (1.4, 1.5, False), (None, 1.5, True), (1.5, 1.5, True)]
)
def test_the_median_bar_fails_and_passes_as_it_should(median: float | None, bar: float, passed: bool) -> None:
    result = with_norms(median)
    outcome = outcomes_for_job(spec({"metric": "minimum_norm.cw.l2.median", "min": bar}), result)[-1]
    assert outcome.passed is passed and outcome.is_norm
    assert outcome.robust_accuracy == (math.inf if median is None else median)
    if not passed:
        assert outcome.message == f"minimum_norm.cw.l2.median is {median:.4g}, below the required {bar:.4g}"
    body = outcome.to_json()  # JSON has no infinity
    assert body["robust_accuracy"] == median


def test_a_max_bar_on_a_quantile_and_the_reports_print_norms() -> None:
    result = with_norms(1.2, p90=4.0)
    outcomes = outcomes_for_job(spec({"metric": "minimum_norm.cw.l2.p90", "max": 3.5}), result)
    assert not outcomes[-1].passed and "above the allowed 3.5" in outcomes[-1].message
    text = markdown.markdown_report(result, outcomes)
    assert "| ❌ | cw-9×1000 l2 p90 minimal norm | 4 | — | ≤ 3.5 |" in text
    assert "| cw-9×1000 | l2 | 1.2 | 1.4 | 0.5 | 0.9 | 2 | 4 | 180/190 |" in text
    xml = junit.junit_report(result, outcomes)
    assert "value=4" in xml and "%" not in xml.split("value=4")[1].split("</")[0]


def test_min_median_norm_in_a_checks_file_is_the_general_bar(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"m")
    text = """
[model]
path = "model.keras"
[dataset]
id = "builtin:mnist-5k:test"
[[checks]]
attack = "cw"
steps = 100
min_median_norm = 1.2
"""
    (tmp_path / "parry.toml").write_text(text)
    config = load_config(tmp_path / "parry.toml")
    assert config.thresholds() == [Threshold(metric="minimum_norm.cw.l2.median", min=1.2)]
    body = config.evaluation_spec(model_id="m", dataset_id="d")
    assert EvaluationSpec.model_validate(body).attacks[0].eps_values() == []
    (tmp_path / "parry.toml").write_text(text.replace('"cw"', '"pgd"\neps = 0.1'))
    with pytest.raises(CheckConfigError, match="min_median_norm is a bar on a minimum-norm attack"):
        load_config(tmp_path / "parry.toml").thresholds()
