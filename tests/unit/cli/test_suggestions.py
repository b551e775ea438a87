"""Typos in parry.toml get "did you mean …" from the keys that would have been valid there."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.config import CheckConfigError, load_config

FILE = """
[model]
id = "mdl_x"
[dataset]
id = "builtin:digits:test"
[evaluation]
seed = 1
[[checks]]
attack = "pgd"
eps = 0.1
min_robust_accuracy = 0.3
"""


@pytest.mark.parametrize(
    ("old", "new", "hint"),
    [
        ("min_robust_accuracy", "min_robust_acc", "'min_robust_acc' is neither a key of a check nor a field "
         "of pgd; did you mean 'min_robust_accuracy'?"),
        ("eps = 0.1", "epsilon = 0.1", "did you mean 'eps'?"),
        ("seed = 1", "sed = 1", "'evaluation.sed' is not a known key; did you mean 'seed'?"),
        ("[dataset]", "[datset]", "'datset' is not a known key; did you mean 'dataset'?"),
        ("[[checks]]", "[[check]]", "'check' is not a known key; did you mean 'checks'?"),
        ('id = "mdl_x"', 'ide = "mdl_x"', "'model.ide' is not a known key; did you mean 'id'?"),
        ("seed = 1", "qqqq = 1", "'evaluation.qqqq' is not a known key (known: seed, batch_size,"),
        ('attack = "pgd"', 'attack = "pgdd"', "unknown attack (did you mean 'pgd'?); known attacks: fgsm,"),
    ],
)  # fmt: skip
def test_a_misspelt_key_names_the_key_it_was_near(tmp_path: Path, old: str, new: str, hint: str) -> None:
    path = tmp_path / "parry.toml"
    path.write_text(FILE.replace(old, new))
    with pytest.raises(CheckConfigError) as caught:
        load_config(path)
    assert hint in str(caught.value)
