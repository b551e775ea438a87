"""A model that takes [0, 255]: a built-in reaches it in [0, 255] (scaled from its [0, 1] form); an upload
in [0, 1] is evaluated as it is, with a warning that it uses 0.4% of input_range (issue 15, item 5)."""

from __future__ import annotations

from typing import Any

import keras

from service.domain.datasets import ArrayDataset
from service.domain.specs import EvaluationOptions, FGSMSpec
from workers.evaluation.engine import evaluate
from workers.models.loading import from_keras


def _byte_model(mnist_cnn: Any) -> Any:
    """The [0, 1] CNN behind a layer that maps [0, 255] to [0, 1]: a model that takes bytes."""
    inputs = keras.Input((28, 28, 1))
    return keras.Model(inputs, mnist_cnn(keras.layers.Rescaling(1 / 255)(inputs)))


def test_builtins_arrive_in_the_model_scale_and_a_dim_upload_is_flagged(
    mnist_cnn: Any, mnist_test: ArrayDataset
) -> None:
    model = from_keras(_byte_model(mnist_cnn), sha256="b" * 64)
    options = EvaluationOptions(attacks=[FGSMSpec(eps=[25.5])], input_range=(0.0, 255.0), max_samples=300)
    builtin = evaluate(model, mnist_test, options).result
    assert builtin.clean_accuracy > 0.9
    assert not any("input_range" in w for w in builtin.warnings), builtin.warnings
    upload = ArrayDataset(mnist_test.x, mnist_test.y, "u" * 64, "dst_upload")  # [0, 1] values, not a built-in
    dim = evaluate(model, upload, options).result
    assert dim.clean_accuracy < 0.5  # near-black images for this model
    assert any("0.4% of input_range [0, 255]" in w for w in dim.warnings), dim.warnings
