"""The checks file (service/cli/config.py) and the verdicts on a result (service/domain/verdicts.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.cli.config import CheckConfig, CheckConfigError, find_config, load_config
from service.domain.specs import EvaluationSpec, PGDSpec, Threshold
from service.domain.stats import wilson_interval
from service.domain.verdicts import BaselineError, baseline_result, judge, outcomes_for_job
from tests.unit.check_helpers import fake_result

BASIC = """
[model]
path = "model.keras"
[dataset]
id = "builtin:mnist-5k:test"
[evaluation]
max_samples = 200
seed = 3
[[checks]]
attack = "pgd"
eps = 0.05
steps = 20
min_robust_accuracy = 0.3
[[checks]]
attack = "fgsm"
eps = [0.1, 0.2]
min_robust_accuracy = 0.1
use_lower_bound = true
"""


def write(tmp_path: Path, text: str, name: str = "parry.toml") -> Path:
    (tmp_path / "model.keras").write_bytes(b"m")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_checks_file_becomes_an_evaluation_with_thresholds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASIC))
    assert config.model.path == tmp_path / "model.keras"  # relative to the file, not the working directory
    spec = EvaluationSpec.model_validate(
        config.evaluation_spec(model_id="mdl_1", dataset_id="builtin:mnist-5k:test", no_cache=True)
    )
    assert spec.max_samples == 200 and spec.seed == 3 and spec.no_cache
    assert (
        isinstance(spec.attacks[0], PGDSpec) and spec.attacks[0].steps == 20 and spec.attacks[0].eps == 0.05
    )
    assert spec.attacks[1].eps == [0.1, 0.2]
    assert spec.thresholds == [
        Threshold(attack=0, min_robust_accuracy=0.3, use_lower_bound=False),
        Threshold(attack=1, min_robust_accuracy=0.1, use_lower_bound=True),
    ]


def test_top_level_use_lower_bound_is_the_default_of_every_check(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "use_lower_bound = true\n" + BASIC.replace("use_lower_bound = true", ""))
    )
    assert [t.use_lower_bound for t in config.thresholds()] == [True, True]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model\npath=1", "not valid TOML"),
        (BASIC.replace('path = "model.keras"', ""), "model: give exactly one of path and id"),
        (BASIC.replace('id = "builtin:mnist-5k:test"', 'path = "nope.npz"'), "dataset file"),
        (BASIC.replace('attack = "fgsm"', 'attack = "deepfool"'), "checks[1] (deepfool): unknown attack"),
        (BASIC.replace("steps = 20", "stpes = 20"), "checks[0] (pgd): 'stpes' is neither"),
        (BASIC.replace("steps = 20", "steps = 0"), "checks[0] (pgd): 'steps'"),
        (BASIC.replace("min_robust_accuracy = 0.3", "min_robust_accuracy = 30"), "min_robust_accuracy"),
        (
            BASIC.replace("[evaluation]", "[evaluation]\nbatchsize = 3"),
            "'evaluation.batchsize' is not a known key",
        ),
        (
            '[model]\npath = "model.keras"\n[dataset]\nid = "x"\n',
            "add at least one [[checks]] table (an attack), an [ood] table or an [evaluation.corruptions]",
        ),
    ],
)
def test_bad_files_are_one_sentence_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CheckConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(path) in str(caught.value) or "checks[" in str(caught.value)


def test_find_config_defaults_to_parry_toml_in_the_working_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckConfigError, match="--config"):
        find_config(None, cwd=tmp_path)
    path = write(tmp_path, BASIC)
    assert find_config(None, cwd=tmp_path) == path
    with pytest.raises(CheckConfigError, match="other.toml does not exist"):
        find_config(tmp_path / "other.toml")


# ---- verdicts ------------------------------------------------------------------------------------------

ATTACKS: list[dict[str, Any]] = [
    {"name": "pgd", "eps": 0.05, "steps": 20},
    {"name": "fgsm", "eps": [0.1, 0.2]},
]


def _config(tmp_path: Path) -> CheckConfig:
    return load_config(write(tmp_path, BASIC))


def test_every_attack_and_eps_gets_a_verdict_on_its_estimate_or_lower_bound(tmp_path: Path) -> None:
    config = _config(tmp_path)
    # pgd 0.32 clears 0.3; fgsm 0.2 at eps 0.1 clears 0.1 even at its lower bound; fgsm 0.12 at eps 0.2
    # is above 0.1 but its lower bound (200 samples) is not.
    levels = {("pgd", 0.05): 0.32, ("fgsm", 0.1): 0.2, ("fgsm", 0.2): 0.12}
    result = fake_result(ATTACKS, lambda name, eps: levels[(name, eps)])
    outcomes = judge(result, config.attack_specs(), config.thresholds())
    assert [o.name for o in outcomes] == ["pgd-20 linf eps=0.05", "fgsm linf eps=0.1", "fgsm linf eps=0.2"]
    assert [o.passed for o in outcomes] == [True, True, False]
    assert outcomes[2].ci95 == pytest.approx(wilson_interval(24, 200))
    assert outcomes[2].ci95[0] < 0.1 < outcomes[2].robust_accuracy
    assert "lower bound is below the required 10.0%" in outcomes[2].message
    assert "estimate at or above the required 30.0%" in outcomes[0].message


def test_a_point_estimate_below_the_bar_fails(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = fake_result(ATTACKS, lambda name, eps: 0.25 if name == "pgd" else 0.9)
    outcome = judge(result, config.attack_specs(), config.thresholds())[0]
    assert not outcome.passed and outcome.message == "robust accuracy 25.0% is below the required 30.0%"


def test_the_workers_interval_is_used_when_present(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = fake_result(ATTACKS, lambda name, eps: 0.5)
    row = result.attacks[0]
    object.__setattr__(row, "robust_accuracy_ci95", (0.29, 0.7))  # as the lead's schema will carry it
    outcomes = judge(
        result, config.attack_specs(), [Threshold(attack=0, min_robust_accuracy=0.3, use_lower_bound=True)]
    )
    assert outcomes[0].ci95 == (0.29, 0.7) and not outcomes[0].passed


def test_a_regression_beyond_the_tolerance_fails_and_a_small_one_passes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    baseline = fake_result(ATTACKS, lambda name, eps: 0.5)
    now = fake_result(ATTACKS, lambda name, eps: 0.49 if name == "pgd" else 0.4)
    outcomes = judge(now, config.attack_specs(), baseline=baseline, max_regression=0.02)
    assert [o.passed for o in outcomes] == [True, False, False]
    assert outcomes[0].baseline_robust_accuracy == 0.5 and outcomes[0].regression == pytest.approx(0.01)
    assert "fell from 50.0% (baseline) to 40.0%, a drop of 10.0 points" in outcomes[1].message
    # per-check tolerances
    assert [
        o.passed for o in judge(now, config.attack_specs(), baseline=baseline, max_regression=[0, 0.1])
    ] == [
        False,
        True,
        True,
    ]


def test_the_baseline_is_only_compared_with_the_same_attack_settings(tmp_path: Path) -> None:
    config = _config(tmp_path)
    baseline = fake_result([{"name": "pgd", "eps": 0.05, "steps": 40}], lambda name, eps: 0.9)
    outcome = judge(fake_result(ATTACKS, lambda n, e: 0.4), config.attack_specs(), baseline=baseline)[0]
    assert outcome.passed and outcome.baseline_robust_accuracy is None


def test_a_result_that_does_not_match_the_spec_is_refused() -> None:
    result = fake_result([{"name": "fgsm", "eps": 0.1}])
    with pytest.raises(ValueError, match="one row per attack"):
        judge(result, [PGDSpec(eps=0.1)])


def test_a_stored_job_is_judged_by_its_spec_thresholds() -> None:
    spec = {"attacks": ATTACKS, "thresholds": [{"attack": 1, "eps": 0.2, "min_robust_accuracy": 0.8}]}
    outcomes = outcomes_for_job(spec, fake_result(ATTACKS, lambda n, e: 0.7))
    assert [o.passed for o in outcomes] == [True, True, False]
    assert [o.min_robust_accuracy for o in outcomes] == [None, None, 0.8]


def test_baselines_can_be_a_result_a_job_or_a_check_report() -> None:
    result = fake_result(ATTACKS).model_dump(mode="json")
    for data in (result, {"id": "job_1", "result": result}, {"passed": True, "checks": [], "result": result}):
        assert baseline_result(data).num_samples == 200
    with pytest.raises(BaselineError, match="not an evaluation result"):
        baseline_result({"hello": 1})


def test_thresholds_must_name_attacks_the_evaluation_runs() -> None:
    base = {"model_id": "m", "dataset_id": "d", "attacks": ATTACKS}
    with pytest.raises(ValueError, match="only 2 attacks"):
        EvaluationSpec.model_validate({**base, "thresholds": [{"attack": 2, "min_robust_accuracy": 0.1}]})
    with pytest.raises(ValueError, match="eps 0.3"):
        EvaluationSpec.model_validate(
            {**base, "thresholds": [{"attack": 1, "eps": 0.3, "min_robust_accuracy": 0}]}
        )


def test_metric_thresholds_in_the_checks_file_are_checked_before_anything_runs(tmp_path: Path) -> None:
    worst = '[[thresholds]]\nmetric = "worst_case.linf.{eps}"\nmin = 0.2\n'
    config = load_config(write(tmp_path, BASIC + worst.format(eps=0.2)))
    assert config.thresholds()[-1] == Threshold(metric="worst_case.linf.0.2", min=0.2)
    with pytest.raises(CheckConfigError, match="no attack runs there; this evaluation has"):
        load_config(write(tmp_path, BASIC + worst.format(eps=0.25)))
    with pytest.raises(
        CheckConfigError, match=r"thresholds\[0\] \(worst_case.linf\): .*names no result value"
    ):
        load_config(write(tmp_path, BASIC + '[[thresholds]]\nmetric = "worst_case.linf"\nmin = 0.2\n'))
    with pytest.raises(CheckConfigError, match="known attacks: fgsm, pgd, apgd-ce, .*, autoattack"):
        load_config(write(tmp_path, BASIC.replace('attack = "fgsm"', 'attack = "deepfool"')))
