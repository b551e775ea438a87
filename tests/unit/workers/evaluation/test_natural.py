"""The engine's calibration and OOD figures, and an evaluation without attacks, on a trained CNN."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset, from_arrays
from service.domain.specs import EvaluationOptions, FGSMSpec, OODSpec
from workers.evaluation.calibration import calibration
from workers.evaluation.engine import EvaluationError, evaluate
from workers.evaluation.ood import ood_result
from workers.models.loading import LoadedModel, from_keras

N = 120


@pytest.fixture(scope="module")
def model(mnist_cnn: Any) -> LoadedModel:
    return from_keras(mnist_cnn, sha256="e" * 64)


@pytest.fixture(scope="module")
def noise() -> ArrayDataset:
    x = np.random.default_rng(0).random((300, 28, 28, 1)).astype(np.float32)
    return from_arrays(x, None, name="noise")


def test_ood_without_attacks(
    model: LoadedModel, mnist_test: ArrayDataset, noise: ArrayDataset, mnist_cnn: Any
) -> None:
    options = EvaluationOptions(ood=OODSpec(dataset_id="noise", scores=["energy", "msp"]), max_samples=N)
    outcome = evaluate(model, mnist_test, options, ood_dataset=noise)
    result, per = outcome.result, outcome.per_sample
    assert result.attacks == [] and result.worst_case == [] and result.ood_dataset_sha256 == noise.sha256
    assert per["clean_scores"].shape == (N, 3) and per["ood_scores"].shape == (N, 3)  # max_samples applies
    logits = np.asarray(mnist_cnn(noise.x[:N]), np.float64)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    assert np.allclose(per["ood_scores"][:, 0], softmax.max(1), atol=1e-5)
    assert np.allclose(per["ood_scores"][:, 1], logits.max(1), atol=1e-4)
    energy = logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))
    assert np.allclose(per["ood_scores"][:, 2], energy, atol=1e-4)
    assert [o.score for o in result.ood or []] == ["energy", "msp"]
    energy_row = (result.ood or [])[0]
    assert energy_row == ood_result("energy", per["clean_scores"][:, 2], per["ood_scores"][:, 2])
    assert energy_row.num_in == energy_row.num_out == N
    assert result.cost is not None and result.cost.forward_passes >= 2 * N
    assert result.calibration == calibration(per["clean_scores"][:, 0], per["clean_correct"])


def test_calibration_is_always_there(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    options = EvaluationOptions(attacks=[FGSMSpec(eps=0.1)], max_samples=N)
    result = evaluate(model, mnist_test, options).result
    assert result.ood is None and result.calibration is not None
    assert sum(b.count for b in result.calibration.bins) == N
    # A trained CNN is mostly confident and mostly right: a small calibration error.
    assert 0.0 <= result.calibration.ece < 0.2 and result.calibration.mean_confidence > 0.8


def test_ood_data_gets_the_same_checks(model: LoadedModel, mnist_test: ArrayDataset) -> None:
    options = EvaluationOptions(ood=OODSpec(dataset_id="d"), max_samples=10)
    small = from_arrays(np.zeros((5, 8, 8, 1), np.float32), None, name="digits")
    with pytest.raises(EvaluationError, match="OOD dataset does not fit the model"):
        evaluate(model, mnist_test, options, ood_dataset=small)
    loud = from_arrays(np.full((5, 28, 28, 1), 255.0, np.float32), None, name="loud")
    with pytest.raises(EvaluationError, match="OOD dataset's x has values in"):
        evaluate(model, mnist_test, options, ood_dataset=loud)
    with pytest.raises(EvaluationError, match="has no labels"):
        evaluate(model, loud, EvaluationOptions(attacks=[FGSMSpec(eps=0.1)]))
