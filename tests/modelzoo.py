"""Small models the tests train in seconds on the built-in datasets."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from service.domain.datasets import ArrayDataset


def small_cnn(
    input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10, *, softmax: bool = False
) -> Any:
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


def train_clean(
    model: Any, data: ArrayDataset, *, epochs: int = 2, batch_size: int = 100, seed: int = 0
) -> Any:
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

    clone = small_cnn(tuple(model.input_shape[1:]), int(model.output_shape[-1]), softmax=True)
    clone.set_weights(model.get_weights())
    return clone


def accuracy(model: Any, data: ArrayDataset) -> float:
    pred = np.argmax(model.predict(data.x, batch_size=500, verbose=0), axis=1)
    return float((pred == data.y).mean())


def zip_dir(src: Path, dest: Path, *, top: str | None = None) -> Path:
    """Zip a folder's content at the archive root, or inside one `top` folder."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src).as_posix()
            zf.write(p, f"{top}/{rel}" if top else rel)
    return dest


def tar_dir(src: Path, dest: Path, *, top: str | None = None) -> Path:
    """A .tar.gz of a folder's content at the archive root, or inside one `top` folder."""
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=top or ".")
    return dest


def export_model_files(model: Any, dest: Path) -> dict[str, Path]:
    """The same trained network in every upload format, with and without a softmax head.

    Keys: saved_model_dir, saved_model_zip, saved_model_tgz, keras, h5, keras_softmax, h5_softmax,
    saved_model_softmax_zip.
    """
    import warnings

    soft = with_softmax_head(model)
    files: dict[str, Path] = {}
    files["saved_model_dir"] = dest / "saved_model"
    model.export(files["saved_model_dir"], verbose=False)
    files["saved_model_zip"] = zip_dir(files["saved_model_dir"], dest / "saved_model.zip")
    files["saved_model_tgz"] = tar_dir(files["saved_model_dir"], dest / "saved_model.tar.gz", top="model")
    soft_dir = dest / "saved_model_softmax"
    soft.export(soft_dir, verbose=False)
    files["saved_model_softmax_zip"] = zip_dir(soft_dir, dest / "saved_model_softmax.zip", top="model")
    files["keras"] = dest / "model.keras"
    model.save(files["keras"])
    files["keras_softmax"] = dest / "softmax.keras"
    soft.save(files["keras_softmax"])
    with warnings.catch_warnings():
        # Keras calls HDF5 "legacy" and says so on every save; the format is still accepted.
        warnings.simplefilter("ignore", UserWarning)
        files["h5"] = dest / "model.h5"
        model.save(files["h5"])
        files["h5_softmax"] = dest / "softmax.h5"
        soft.save(files["h5_softmax"])
    return files


def digits_cnn_file(dest: Path) -> Path:
    """A tiny CNN trained for a second on the 8x8 digits, saved as .keras."""
    import keras

    from service.domain.datasets import load_builtin

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    train_clean(model, load_builtin("builtin:digits:train"), epochs=3)
    model.save(dest)
    return dest


def digits_softmax_file(dest: Path, *, seed: int = 1) -> Path:
    """Another tiny digits CNN, smaller and ending in a softmax (outputs probabilities), saved as .keras."""
    import keras

    from service.domain.datasets import load_builtin

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    train_clean(model, load_builtin("builtin:digits:train"), epochs=4, batch_size=32, seed=seed)
    model.save(dest)
    return dest
