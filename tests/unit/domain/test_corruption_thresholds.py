"""Thresholds on corruptions (`corruptions.mean_accuracy`, `corruptions.contrast.5`): paths and verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.metric_paths import MetricPath, MetricPathError, parse_metric
from service.domain.results import CorruptionItem, CorruptionsResult
from service.domain.specs import EvaluationSpec
from service.domain.verdicts import outcomes_for_job
from tests.unit.check_helpers import fake_result

ATTACKS: list[dict[str, Any]] = [{"name": "fgsm", "eps": 0.3}]
CORRUPTIONS = {"names": ["contrast", "pixelate"], "severities": [1, 5]}


@pytest.mark.parametrize(
    "text,path",
    [
        ("corruptions.mean_accuracy", MetricPath("corruptions")),
        ("corruptions.contrast.5", MetricPath("corruptions", corruption="contrast", severity=5)),
    ],
)
def test_corruption_paths_parse_and_print_back(text: str, path: MetricPath) -> None:
    assert parse_metric(text) == path
    assert str(path) == text


@pytest.mark.parametrize(
    "text,message",
    [
        ("corruptions", "write corruptions.mean_accuracy or"),
        ("corruptions.fog.1", "unknown corruption 'fog'; known: gaussian_noise"),
        ("corruptions.contrast.6", "the severity must be 1 to 5"),
        ("corruptions.contrast", "corruptions.<name>.<severity>"),
    ],
)
def test_bad_corruption_paths_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(MetricPathError, match=message):
        parse_metric(text)


def test_a_spec_may_only_name_corruptions_it_runs() -> None:
    base = {"model_id": "m", "dataset_id": "d", "attacks": ATTACKS}
    ok = [
        {"metric": "corruptions.mean_accuracy", "min": 0.5},
        {"metric": "corruptions.pixelate.5", "min": 0.1},
    ]
    assert (
        len(EvaluationSpec.model_validate({**base, "corruptions": CORRUPTIONS, "thresholds": ok}).thresholds)
        == 2
    )
    for corruptions, bar, message in [
        (None, {"metric": "corruptions.mean_accuracy", "min": 0.5}, "has no corruptions; add corruptions"),
        (CORRUPTIONS, {"metric": "corruptions.zoom_blur.1", "min": 0.5}, "has names contrast, pixelate"),
        (CORRUPTIONS, {"metric": "corruptions.contrast.3", "min": 0.5}, "has severities 1, 5"),
    ]:
        with pytest.raises(ValueError, match=message):
            EvaluationSpec.model_validate({**base, "corruptions": corruptions, "thresholds": [bar]})


def test_corruption_bars_are_checks_of_their_own() -> None:
    result = fake_result(ATTACKS, lambda name, eps: 0.5, num_samples=200)
    items = [
        CorruptionItem(name="contrast", severity=1, accuracy=0.9),
        CorruptionItem(name="contrast", severity=5, accuracy=0.4),
    ]
    result.corruptions = CorruptionsResult(items=items, mean_accuracy=0.65, relative_error=3.5)
    spec = {
        "attacks": ATTACKS,
        "corruptions": CORRUPTIONS,
        "thresholds": [
            {"metric": "corruptions.mean_accuracy", "min": 0.6},
            {"metric": "corruptions.contrast.5", "min": 0.5},
        ],
    }
    _, mean, contrast = outcomes_for_job(spec, result)
    assert mean.passed and mean.name == "mean corruption accuracy" and mean.robust_accuracy == 0.65
    assert not contrast.passed and contrast.name == "contrast severity 5"
    assert contrast.message == "corruptions.contrast.5 is 40.0%, below the required 50.0%"
    result.corruptions = None
    assert (
        outcomes_for_job(spec, result)[1].message == "the result has no value for corruptions.mean_accuracy"
    )
