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
    """What Keras' error means for the user. Keras wraps the real cause in one "could not be deserialized"
    error per level of the model, so the sentence comes from the innermost cause, and a class Keras
    could not find is called a custom object only when it is not one of Keras' own."""
    chain = _causes(exc)
    text = "\n".join(str(e) for e in chain)
    if "Lambda" in text and "safe_mode" in text:
        return (
            f"The {suffix} file contains a Lambda layer (arbitrary Python code), "
            "which Parry refuses to load; replace it with built-in layers or upload a SavedModel export."
        )
    module = re.search(r"Could not deserialize class '([^']+)' because its parent module (\S+) cannot", text)
    if module:
        return (
            f"The {suffix} file names the module {module.group(2)} for its {module.group(1)}, which this "
            f"Keras ({_keras_version()}) does not have: it was saved by another Keras version; load and save "
            "it again with Keras 3.14 or newer, or upload a SavedModel export (`model.export(path)`)."
        )
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text) or re.search(
        r"Unknown (?:layer|object|activation)[^']*'([^']+)'", text
    )
    if unknown and not _is_builtin(unknown.group(1)):
        return (
            f"The {suffix} file uses the custom object '{unknown.group(1)}', which Parry does not know; "
            "use built-in Keras layers or upload a SavedModel export (`model.export(path)`)."
        )
    layer = _failed_class(text)
    cause = first_sentence(chain[-1])
    if "objects could not be loaded" in str(chain[0]):
        return f"The {suffix} file's weights do not fit its layers: {_weights_problem(str(chain[0]))}"
    if unknown or layer:
        what = f"its {layer} layer" if layer and layer not in ("Sequential", "Functional") else "its model"
        return (
            f"The {suffix} file's configuration is malformed: Keras cannot rebuild {what} "
            f"({cause.rstrip('.')}); save the model again with model.save()."
        )
    return f"The {suffix} file could not be loaded: {cause}"


def _causes(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while len(chain) < 20:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    return chain


def _failed_class(text: str) -> str | None:
    """The innermost class Keras says it could not rebuild."""
    found = re.findall(
        r"Error when deserializing class '([^']+)'|<class '[\w.]*?\.(\w+)'> could not be", text
    )
    names = [a or b for a, b in found]
    return names[-1] if names else None


def _weights_problem(text: str) -> str:
    detail = text.split(":\n\n", 1)[-1]
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", detail)
    layer = re.search(r"Example error message for object <(\w+) name=([^,>]+)", text)
    where = f" ({layer.group(1)} layer '{layer.group(2)}')" if layer else ""
    if shapes:
        return (
            f"a weight{where} has shape {shapes.group(2)} in the file but {shapes.group(1)} in the "
            "configuration; save the model again with model.save()."
        )
    return f"{first_sentence(ValueError(detail)).rstrip('.')}{where}; save the model again with model.save()."


def _is_builtin(name: str) -> bool:
    import keras

    short = name.rsplit(">", 1)[-1].rsplit(".", 1)[-1]
    return any(
        hasattr(namespace, short) for namespace in (keras, keras.layers, keras.models, keras.activations)
    )


def _keras_version() -> str:
    import keras

    return str(keras.__version__)
