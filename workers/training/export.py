"""Export a trained model: a SavedModel archive any TensorFlow loads, and a `.keras` file when possible.

A Keras model exports itself (`model.export`, signatures `serve` and `serving_default`). A model uploaded
as a SavedModel has no Keras twin: its trained variables are saved in a small `tf.Module` whose
`serving_default` returns what the upload returned (logits, or probabilities rebuilt from the
log-probabilities the engine works on).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import tensorflow as tf

from workers.models.loading import LoadedModel


def export_saved_model_zip(model: LoadedModel, dest: Path) -> Path:
    """Write `dest`, a zip with `saved_model.pb` at its root; returns `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parry-export-") as tmp:
        folder = Path(tmp) / "saved_model"
        if model.keras_model is not None:
            model.keras_model.export(str(folder), verbose=False)
        else:
            _save_module(model, folder)
        partial = dest.with_name(dest.name + ".tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(folder).as_posix())
        partial.replace(dest)
    return dest


def export_keras(model: LoadedModel, dest: Path) -> Path | None:
    """Write `dest` as a `.keras` file; None for a model uploaded as a SavedModel (it has no Keras form)."""
    if model.keras_model is None:
        return None
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Keras picks the format from the extension, so save under a .keras name and rename into place.
    with tempfile.TemporaryDirectory(prefix="parry-export-", dir=dest.parent) as tmp:
        partial = Path(tmp) / "model.keras"
        model.keras_model.save(str(partial))
        shutil.move(str(partial), dest)
    return dest


class _Exported(tf.Module):  # type: ignore[misc]
    def __init__(self, model: LoadedModel, variables: list[tf.Variable]) -> None:
        super().__init__(name="parry_trained")
        self.trained_variables = variables  # tracked, so the saved graph finds every weight it reads
        self._logits = model.logits
        self._probabilities = model.output == "probabilities"

    def serve(self, x: tf.Tensor) -> Any:
        z = tf.cast(self._logits(x), tf.float32)
        return {"output_0": tf.nn.softmax(z) if self._probabilities else z}


def _save_module(model: LoadedModel, folder: Path) -> None:
    spec = tf.TensorSpec((None, *model.input_shape), tf.float32, name="inputs")
    probe = tf.function(model.logits).get_concrete_function(spec)
    module = _Exported(model, list(probe.variables))
    serve = tf.function(module.serve, input_signature=[spec])
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve, "serve": serve})
