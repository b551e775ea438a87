"""Cross-check against a peer: our PGD is at least as strong as IBM ART's on the same model and settings."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset
from service.domain.specs import EvaluationOptions, PGDSpec
from workers.evaluation.engine import evaluate
from workers.models.loading import from_keras

N = 500
STEPS, STEP_SIZE = 40, 0.01

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def samples(mnist_test: ArrayDataset) -> ArrayDataset:
    """The first 500 test images (the split is in a fixed random order)."""
    return mnist_test.take(N)


def art_robust_accuracy(model: Any, data: ArrayDataset, eps: float) -> float:
    import tensorflow as tf

    with warnings.catch_warnings():
        # ART announces optional back ends it did not find when it is imported; nothing we use needs them.
        warnings.filterwarnings("ignore", message="PyTorch not found", category=UserWarning)
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    attack = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=STEP_SIZE, max_iter=STEPS, num_random_init=1,
        batch_size=250, verbose=False,
    )  # fmt: skip
    np.random.seed(0)  # ART draws its random start from NumPy's global generator
    x_adv = attack.generate(data.x, np.eye(10, dtype=np.float32)[data.y])
    return float((np.argmax(classifier.predict(x_adv, batch_size=250), axis=1) == data.y).mean())


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_our_pgd_is_at_least_as_strong_as_art(eps: float, mnist_cnn: Any, samples: ArrayDataset) -> None:
    options = EvaluationOptions(
        attacks=[PGDSpec(eps=eps, steps=STEPS, step_size=STEP_SIZE, random_start=True)], batch_size=250
    )
    ours = evaluate(from_keras(mnist_cnn), samples, options).result.attacks[0].robust_accuracy
    theirs = art_robust_accuracy(mnist_cnn, samples, eps)
    assert ours <= theirs + 0.01, f"ours {ours:.3f} vs ART {theirs:.3f} at eps={eps}"
