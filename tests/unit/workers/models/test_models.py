"""Loading every upload format as one differentiable logits callable, and the sentences when it fails."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.domain.datasets import ArrayDataset

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from workers.models.errors import ModelLoadError  # noqa: E402
from workers.models.loading import LoadedModel, load_model  # noqa: E402

LOGIT_FORMATS = ["saved_model_dir", "saved_model_zip", "saved_model_tgz", "keras", "h5"]
SOFTMAX_FORMATS = ["keras_softmax", "h5_softmax", "saved_model_softmax_zip"]


@pytest.fixture(scope="module")
def images(mnist_test: ArrayDataset) -> np.ndarray:
    return mnist_test.x[:16]


@pytest.fixture(scope="module")
def reference_logits(mnist_cnn: Any, images: np.ndarray) -> np.ndarray:
    return np.asarray(mnist_cnn(images, training=False))


def _stored_without_name(src: Path, tmp_path: Path) -> Path:
    """Uploads live in the artifact store under their sha256, with no extension."""
    dest = tmp_path / "0f3a9c"
    dest.write_bytes(src.read_bytes())
    return dest


def _input_gradient(model: LoadedModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(y), logits=model.logits(xt))
        )
    return np.asarray(tape.gradient(loss, xt))


@pytest.mark.parametrize("key", LOGIT_FORMATS)
def test_logit_formats_reproduce_the_keras_logits(
    key: str, model_files: dict[str, Path], images: np.ndarray, reference_logits: np.ndarray, tmp_path: Path
) -> None:
    path = model_files[key]
    if path.is_file():
        path = _stored_without_name(path, tmp_path)
    model = load_model(path, sha256="abc", work_dir=tmp_path / "work")
    assert model.input_shape == (28, 28, 1)
    assert model.num_classes == 10
    assert model.output == "logits"
    assert model.format == ("saved_model" if key.startswith("saved_model") else key)
    assert model.sha256 == "abc"
    np.testing.assert_allclose(np.asarray(model.logits(tf.constant(images))), reference_logits, atol=1e-4)


@pytest.mark.parametrize("key", SOFTMAX_FORMATS)
def test_softmax_heads_report_probabilities_and_give_logits(
    key: str, model_files: dict[str, Path], images: np.ndarray, reference_logits: np.ndarray, tmp_path: Path
) -> None:
    model = load_model(_stored_without_name(model_files[key], tmp_path), work_dir=tmp_path / "work")
    assert model.output == "probabilities"
    assert (model.input_shape, model.num_classes) == ((28, 28, 1), 10)
    logits = np.asarray(model.logits(tf.constant(images)))
    expected_probs = np.asarray(tf.nn.softmax(reference_logits))
    np.testing.assert_allclose(np.asarray(tf.nn.softmax(logits)), expected_probs, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(axis=1), reference_logits.argmax(axis=1))
    if key != "saved_model_softmax_zip":
        # Keras heads are stripped: the true logits, not log-probabilities.
        np.testing.assert_allclose(logits, reference_logits, atol=1e-4)
    else:
        # A SavedModel cannot be re-wired: log-probabilities, which differ from logits by a per-row shift.
        shift = logits - reference_logits
        np.testing.assert_allclose(shift, shift[:, :1] * np.ones_like(shift), atol=1e-3)


def test_stripped_head_shares_the_models_weights(model_files: dict[str, Path], images: np.ndarray) -> None:
    model = load_model(model_files["keras_softmax"])
    before = np.asarray(model.logits(tf.constant(images)))
    kernel = model.keras_model.layers[-1].kernel
    kernel.assign(kernel * 2.0)
    after = np.asarray(model.logits(tf.constant(images)))
    assert not np.allclose(before, after)
    assert np.asarray(model.keras_model(images)).max() <= 1.0  # the Keras model itself still ends in softmax


@pytest.mark.parametrize("key", LOGIT_FORMATS + SOFTMAX_FORMATS)
def test_input_gradient_is_finite_and_non_zero(
    key: str, model_files: dict[str, Path], mnist_test: ArrayDataset, tmp_path: Path
) -> None:
    model = load_model(model_files[key], work_dir=tmp_path)
    grad = _input_gradient(model, mnist_test.x[:8], mnist_test.y[:8])
    assert grad.shape == (8, 28, 28, 1)
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).sum() > 0


@pytest.mark.parametrize("key", ["saved_model_zip", "keras_softmax", "h5_softmax"])
def test_logits_work_inside_tf_function(
    key: str, model_files: dict[str, Path], images: np.ndarray, tmp_path: Path
) -> None:
    model = load_model(model_files[key], work_dir=tmp_path)
    compiled = tf.function(model.logits)
    np.testing.assert_allclose(compiled(tf.constant(images)), model.logits(tf.constant(images)), atol=1e-5)


def test_probe_samples_decide_the_output_kind(model_files: dict[str, Path], images: np.ndarray) -> None:
    model = load_model(model_files["saved_model_softmax_zip"], probe=images)
    assert model.output == "probabilities"
    model = load_model(model_files["saved_model_dir"], probe=images)
    assert model.output == "logits"


def test_explicit_output_overrides_detection(
    model_files: dict[str, Path], images: np.ndarray, reference_logits: np.ndarray
) -> None:
    as_probs = load_model(model_files["saved_model_dir"], output="probabilities")
    assert as_probs.output == "probabilities"
    # Read as probabilities, the logits become log(clip(z)): no longer the raw outputs.
    assert not np.allclose(np.asarray(as_probs.logits(tf.constant(images))), reference_logits, atol=1e-2)
    as_logits = load_model(model_files["saved_model_softmax_zip"], output="logits")
    assert as_logits.output == "logits"
    np.testing.assert_allclose(
        np.asarray(as_logits.logits(tf.constant(images))),
        np.asarray(tf.nn.softmax(reference_logits)),
        atol=1e-5,
    )


def test_extracted_archive_is_reused_from_work_dir(model_files: dict[str, Path], tmp_path: Path) -> None:
    load_model(model_files["saved_model_zip"], sha256="deadbeef", work_dir=tmp_path)
    load_model(model_files["saved_model_zip"], sha256="deadbeef", work_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model-deadbeef"]


def test_default_work_dir_lives_as_long_as_the_model(
    model_files: dict[str, Path], images: np.ndarray
) -> None:
    import gc

    model = load_model(model_files["saved_model_tgz"])
    gc.collect()
    assert np.asarray(model.logits(tf.constant(images))).shape == (16, 10)


# Failures: one sentence each


def _error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_random_bytes_are_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "is not a SavedModel archive, a .keras file or an .h5 file" in _error(path)


def test_truncated_zip_is_named(model_files: dict[str, Path], tmp_path: Path) -> None:
    data = model_files["saved_model_zip"].read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _error(path)


def test_truncated_keras_file_is_named(model_files: dict[str, Path], tmp_path: Path) -> None:
    data = model_files["keras"].read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) - 100])
    assert "truncated or corrupt" in _error(path)


def test_truncated_h5_file_is_named(model_files: dict[str, Path], tmp_path: Path) -> None:
    data = model_files["h5"].read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) // 2])
    assert _error(path).startswith("The .h5 file could not be loaded")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused(tmp_path: Path, suffix: str) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(3)])
    path = tmp_path / f"lambda{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras calls .h5 legacy on save
        model.save(path)
    assert "has a Lambda layer" in _error(
        _stored_without_name(path, tmp_path)
    )  # workers/models/keras_vetting.py


def test_unknown_custom_layer_is_named(tmp_path: Path) -> None:
    @keras.saving.register_keras_serializable(package="parry_test")
    class Doubler(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x * 2

    model = keras.Sequential([keras.Input((4,)), Doubler(), keras.layers.Dense(3)])
    path = tmp_path / "custom.keras"
    model.save(path)
    keras.saving.get_custom_objects().pop("parry_test>Doubler")
    message = _error(path)
    assert "custom object" in message and "Doubler" in message


def _save_module(tmp_path: Path, module: Any, signatures: Any = None) -> Path:
    path = tmp_path / "sm"
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def test_saved_model_with_two_inputs_names_them(tmp_path: Path) -> None:
    class TwoInputs(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 4], tf.float32)]
        )
        def serve(self, image: Any, mask: Any) -> Any:
            return {"logits": tf.concat([image, mask], axis=1)}

    module = TwoInputs()
    message = _error(_save_module(tmp_path, module, {"serving_default": module.serve}))
    assert "several inputs (image, mask)" in message


def test_saved_model_with_int_input_names_the_dtype(tmp_path: Path) -> None:
    class IntInput(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int32)])
        def serve(self, x: Any) -> Any:
            return {"logits": tf.cast(x, tf.float32)}

    module = IntInput()
    assert "dtype int32" in _error(_save_module(tmp_path, module, {"serving_default": module.serve}))


def test_saved_model_without_signature_says_how_to_export(tmp_path: Path) -> None:
    module = tf.Module()
    module.w = tf.Variable(1.0)
    message = _error(_save_module(tmp_path, module))
    assert "no signatures" in message and "model.export(path)" in message


def test_saved_model_with_several_outputs_names_them(tmp_path: Path) -> None:
    class TwoHeads(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: Any) -> Any:
            return {"a": x[:, :2], "b": x[:, 2:]}

    module = TwoHeads()
    assert "several outputs (a, b)" in _error(
        _save_module(tmp_path, module, {"serving_default": module.serve})
    )


def test_saved_model_picks_the_only_class_output(tmp_path: Path) -> None:
    class LogitsAndLabel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: Any) -> Any:
            logits = x * 3.0 - 1.0
            return {"logits": logits, "label": tf.argmax(logits, axis=1)}

    module = LogitsAndLabel()
    model = load_model(_save_module(tmp_path, module, {"serving_default": module.serve}))
    assert (model.input_shape, model.num_classes, model.output) == ((4,), 4, "logits")
    np.testing.assert_allclose(np.asarray(model.logits(tf.ones((2, 4)))), np.full((2, 4), 2.0))


def test_unknown_input_shape_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "m.keras"
    keras.Model(inputs, outputs).save(path)
    assert "input shape (None, None, 3) is not fully defined" in _error(path)


def test_keras_model_without_input_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    keras.Sequential([keras.layers.Dense(3)]).save(path)
    assert "no defined input" in _error(path)


def test_single_sigmoid_output_is_not_supported(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")]).save(path)
    assert "binary single-output models are not supported yet" in _error(path)


def test_zip_without_saved_model_or_keras_config(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert "is not a SavedModel archive" in _error(path)


def test_saved_model_writing_files_is_refused_before_it_runs(tmp_path: Path) -> None:
    target = tmp_path / "written"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: Any) -> Any:
            tf.io.write_file(str(target), tf.strings.as_string(x[0, 0]))
            return {"logits": x * 2.0}

    module = Writer()
    message = _error(_save_module(tmp_path, module, {"serving_default": module.serve}))
    assert "operation WriteFile (file access)" in message
    assert not target.exists()


def test_saved_model_reading_files_is_refused(tmp_path: Path) -> None:
    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: Any) -> Any:
            secret = tf.strings.length(tf.io.read_file("/etc/hostname"))
            return {"logits": x * tf.cast(secret, tf.float32)}

    module = Reader()
    assert "operation ReadFile" in _error(_save_module(tmp_path, module, {"serving_default": module.serve}))


# The op policy itself is tested in test_op_allowlist.py.


def test_saved_model_with_unknown_input_shape_is_refused(tmp_path: Path) -> None:
    class AnyWidth(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
        def serve(self, x: Any) -> Any:
            return {"logits": tf.concat([x[:, :1], -x[:, :1]], axis=1)}

    module = AnyWidth()
    message = _error(_save_module(tmp_path, module, {"serving_default": module.serve}))
    assert "input shape (None,) is not fully defined" in message


def test_probe_with_the_wrong_shape_is_named(model_files: dict[str, Path]) -> None:
    message = _error(model_files["keras"], probe=np.zeros((4, 8, 8, 1), np.float32))
    assert "samples have shape (8, 8, 1) but the model expects (28, 28, 1)" in message
