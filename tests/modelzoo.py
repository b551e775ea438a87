"""Small models the tests train in seconds on the built-in datasets."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.datasets import ArrayDataset


def small_cnn(input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10, *, softmax: bool = False) -> Any:
    """Conv32-Pool-Conv64-Pool-Dense128-Dense10: the network of the benchmarks."""
    import keras

    layers = [
        keras.Input(shape=input_shape),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax" if softmax else None),
    ]
    return keras.Sequential(layers, name="small_cnn")


def train_clean(model: Any, data: ArrayDataset, *, epochs: int = 2, batch_size: int = 100, seed: int = 0) -> Any:
    """Plain (non-adversarial) training; deterministic for a given seed."""
    import keras

    keras.utils.set_random_seed(seed)
    from_logits = model.layers[-1].activation is not keras.activations.softmax
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    model.fit(data.x, data.y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model


def with_softmax_head(model: Any) -> Any:
    """The same network and weights, ending in a softmax: outputs probabilities instead of logits."""
    import keras

    clone = small_cnn(tuple(model.input_shape[1:]), int(model.output_shape[-1]), softmax=True)
    clone.set_weights(model.get_weights())
    return clone


def accuracy(model: Any, data: ArrayDataset) -> float:
    pred = np.argmax(model.predict(data.x, batch_size=500, verbose=0), axis=1)
    return float((pred == data.y).mean())
