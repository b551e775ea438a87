"""The variables a model's forward pass reads, in an order that is the same on every load of the model."""

from __future__ import annotations

import tensorflow as tf

from workers.models.errors import first_sentence
from workers.models.loading import LoadedModel
from workers.training.errors import TrainingError


def trainable_variables(model: LoadedModel) -> tuple[list[tf.Variable], list[tf.Variable]]:
    """The trainable variables the model's forward pass reads, and all the variables it reads."""
    spec = tf.TensorSpec((None, *model.input_shape), tf.float32)
    try:
        traced = tf.function(model.logits).get_concrete_function(spec)
    except Exception as exc:
        raise TrainingError(f"The model cannot be traced for training: {first_sentence(exc)}") from exc
    # `traced.variables` comes in no fixed order; the capture order is the graph's own, the same on every
    # load of the model, so checkpoints can store the weights as a list.
    position = {id(t): i for i, t in enumerate(traced.captured_inputs)}

    def order(v: tf.Variable) -> tuple[int, str]:
        return position.get(id(v.handle), len(position)), v.name

    trainable = sorted(traced.trainable_variables, key=order)
    if not trainable:
        raise TrainingError(
            "The model has no trainable variables (its weights are constants or frozen), "
            "so it cannot be trained; upload a Keras model or a SavedModel exported with its variables "
            "(e.g. `model.export(path)`)."
        )
    return trainable, sorted(traced.variables, key=order)
