"""Keras models (.keras and legacy .h5 files): loading in safe mode, and logits under a softmax head."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from service.vetting.archives import ArchiveError, check_archive
from workers.models.errors import ModelLoadError, first_sentence
from workers.models.keras_vetting import check_keras_version, vet_keras_file


def load_keras(path: Path, suffix: str) -> Any:
    """Load a .keras (`suffix=".keras"`) or .h5 file, vetted first, with safe_mode and without compiling it.

    The model must have one floating-point input and one output.
    """
    import keras

    check_keras_version()
    if suffix == ".keras":
        try:
            check_archive(path)  # a .keras file is a zip: refuse bombs before Keras inflates it
        except ArchiveError as exc:
            raise ModelLoadError(str(exc)) from exc
    # The configuration and the HDF5 structure are vetted as data first: safe_mode alone has been bypassed.
    vet_keras_file(path, suffix)
    # Keras picks its loader by file extension; uploads are stored without one, so load through a named link.
    with tempfile.TemporaryDirectory(prefix="parry-keras-") as tmp:
        alias = Path(tmp) / f"model{suffix}"
        alias.symlink_to(path.resolve())
        try:
            model = keras.saving.load_model(alias, safe_mode=True, compile=False)
        except Exception as exc:
            raise ModelLoadError(_error_sentence(exc, suffix)) from exc
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"The {suffix} file holds a {type(model).__name__}, not a Keras model.")
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as exc:
        raise ModelLoadError(
            "The model has no defined input; build it with keras.Input(shape=...) before saving it."
        ) from exc
    if len(inputs) != 1:
        names = ", ".join(t.name for t in inputs)
        raise ModelLoadError(
            f"The model takes several inputs ({names}); Parry needs a model with a single input."
        )
    if len(outputs) != 1:
        names = ", ".join(t.name for t in outputs)
        raise ModelLoadError(
            f"The model has several outputs ({names}); Parry needs a single classifier output."
        )
    dtype = tf.as_dtype(inputs[0].dtype)
    if not dtype.is_floating:
        raise ModelLoadError(
            f"The model's input has dtype {dtype.name}; "
            "Parry needs a floating-point input to compute gradients."
        )
    return model


def keras_call(model: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    """The model in inference mode, float32 out."""

    def call(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(model(x, training=False), tf.float32)

    return call


def logits_without_softmax(model: Any) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """The model's computation before its final softmax, sharing its weights; None without one.

    A final Softmax layer (or Activation('softmax')) is cut off; a final layer with
    activation='softmax' (Dense, Conv) is called through a shallow twin whose activation is None,
    so the twin uses the very same variables and later training of the model shows in the logits.
    """
    import keras

    last = model.layers[-1] if model.layers else None
    if last is None:
        return None
    is_softmax_layer = isinstance(last, keras.layers.Softmax) and getattr(last, "axis", -1) in (-1, 1)
    is_softmax_activation = getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
    if not (is_softmax_layer or is_softmax_activation):
        return None
    try:
        trunk = keras.Model(inputs=model.inputs[0], outputs=last.input)
    except Exception:
        return None  # a model whose layers cannot be re-wired falls back to log-probabilities
    if is_softmax_layer or isinstance(last, keras.layers.Activation):
        head: Any = None
    else:
        # Layers apply `self.activation` last in `call`; the twin shares every other attribute.
        head = object.__new__(type(last))
        head.__dict__.update(last.__dict__)
        head.__dict__["activation"] = None

    def logits(x: tf.Tensor) -> tf.Tensor:
        h = trunk(x, training=False)
        return tf.cast(h if head is None else head(h, training=False), tf.float32)

    return logits


def _error_sentence(exc: Exception, suffix: str) -> str:
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return (
            f"The {suffix} file contains a Lambda layer (arbitrary Python code), "
            "which Parry refuses to load; replace it with built-in layers or upload a SavedModel export."
        )
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text) or re.search(
        r"Unknown (?:layer|object|activation)[^']*'([^']+)'", text
    )
    if unknown:
        return (
            f"The {suffix} file uses the custom object '{unknown.group(1)}', which Parry does not know; "
            "use built-in Keras layers or upload a SavedModel export (`model.export(path)`)."
        )
    return f"The {suffix} file could not be loaded: {first_sentence(exc)}"
