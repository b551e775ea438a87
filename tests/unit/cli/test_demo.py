"""`parry demo` trains a small CNN on a built-in dataset and writes a .keras file Parry accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.cli.main import main
from service.domain.datasets import load_builtin


def test_demo_writes_a_model_that_classifies_the_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    from workers.models.loading import load_model

    path = tmp_path / "demo.keras"
    assert main(["demo", "--output", str(path), "--epochs", "6"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {path}" in printed and "builtin:digits:test" in printed and "parry submit" in printed
    test = load_builtin("builtin:digits:test")
    model = keras.saving.load_model(path)
    accuracy = float(np.mean(np.argmax(model.predict(test.x, verbose=0), axis=1) == test.y))
    assert accuracy > 0.85
    assert f"clean accuracy {100 * accuracy:.1f}%" in printed
    loaded = load_model(path)  # what a worker's validation does with the upload
    assert loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10 and loaded.output == "logits"


def test_demo_refuses_to_overwrite_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.keras"
    path.write_bytes(b"mine")
    assert main(["demo", "--output", str(path)]) == 2
    assert "--force" in capsys.readouterr().err and path.read_bytes() == b"mine"
    for argv, says in [
        (["--dataset", "data.npz"], "built-in id"),
        (["--dataset", "builtin:digits:test"], "without a split"),
        (["--epochs", "0"], "between 1 and 200"),
    ]:
        assert main(["demo", "--output", str(tmp_path / "x.keras"), *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and err.startswith("parry: ")
    assert not (tmp_path / "x.keras").exists()
