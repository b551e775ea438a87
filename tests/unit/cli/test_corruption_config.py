"""`parry.toml` with corruptions: `[evaluation.corruptions]` and bars on corruption metric paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.config import CheckConfigError, load_config

BASE = """
[model]
id = "mdl_x"
[dataset]
id = "builtin:digits:test"
[[checks]]
attack = "fgsm"
eps = 0.1
min_robust_accuracy = 0.3
"""


def test_corruptions_and_their_bars_reach_the_evaluation_spec(tmp_path: Path) -> None:
    path = tmp_path / "parry.toml"
    path.write_text(
        BASE
        + """
[evaluation.corruptions]
names = ["contrast", "motion_blur"]
severities = [1, 5]
[[thresholds]]
metric = "corruptions.mean_accuracy"
min = 0.7
"""
    )
    spec = load_config(path).evaluation_spec(model_id="mdl_x", dataset_id="builtin:digits:test")
    assert spec["corruptions"] == {"names": ["contrast", "motion_blur"], "severities": [1, 5]}
    assert spec["thresholds"][-1] == {
        "metric": "corruptions.mean_accuracy",
        "min": 0.7,
        "use_lower_bound": False,
    }


def test_a_corruption_bar_without_corruptions_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "parry.toml"
    path.write_text(BASE + '[[thresholds]]\nmetric = "corruptions.contrast.5"\nmin = 0.5\n')
    with pytest.raises(CheckConfigError, match="has no corruptions; add corruptions"):
        load_config(path)
