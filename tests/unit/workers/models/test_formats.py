"""One network, every upload format: the attacks see the same model, so robust accuracy agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import EvaluationOptions, FGSMSpec, PGDSpec
from workers.evaluation.engine import evaluate
from workers.models.loading import from_keras, load_model

N = 300
OPTIONS = EvaluationOptions(attacks=[PGDSpec(eps=0.1, steps=20), FGSMSpec(eps=0.1)], batch_size=150)
FORMATS = [
    "saved_model_dir", "saved_model_zip", "keras", "h5",
    "keras_softmax", "h5_softmax", "saved_model_softmax_zip",
]  # fmt: skip


@pytest.fixture(scope="module")
def samples(mnist_test: ArrayDataset) -> ArrayDataset:
    """The first 300 test images (the split is in a fixed random order)."""
    return mnist_test.take(N)


@pytest.fixture(scope="module")
def reference(mnist_cnn: Any, samples: ArrayDataset) -> list[float]:
    result = evaluate(from_keras(mnist_cnn), samples, OPTIONS).result
    return [result.clean_accuracy, *(a.robust_accuracy for a in result.attacks)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gives_the_same_robust_accuracy(
    fmt: str, model_files: dict[str, Path], samples: ArrayDataset, reference: list[float], tmp_path: Path
) -> None:
    model = load_model(model_files[fmt], work_dir=tmp_path)
    assert model.num_classes == 10 and model.input_shape == (28, 28, 1)
    result = evaluate(model, samples, OPTIONS).result
    clean, pgd, fgsm = reference
    assert result.clean_accuracy == pytest.approx(clean, abs=1 / N)
    assert result.attacks[0].robust_accuracy == pytest.approx(pgd, abs=0.01)
    assert result.attacks[1].robust_accuracy == pytest.approx(fgsm, abs=0.01)
