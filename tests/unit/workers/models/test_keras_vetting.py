"""Keras files are vetted as data before Keras reads them: config JSON, HDF5 links, the Keras version."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from service.vetting.keras_config import UnsafeKerasConfig, check_config, check_keras_file
from workers.models.errors import ModelLoadError
from workers.models.keras_vetting import check_h5_file, check_keras_version, vet_keras_file
from workers.models.loading import load_model


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    root = tmp_path_factory.mktemp("keras_vetting")
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, activation="gelu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    paths = {"keras": root / "m.keras", "h5": root / "m.h5"}
    model.save(paths["keras"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras calls .h5 legacy on save
        model.save(paths["h5"])
    x = keras.Input((6,))
    lam = keras.Model(x, keras.layers.Dense(3)(keras.layers.Lambda(lambda t: t * 2.0)(x)))
    paths["lambda.keras"] = root / "lambda.keras"
    paths["lambda.h5"] = root / "lambda.h5"
    lam.save(paths["lambda.keras"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lam.save(paths["lambda.h5"])
    return paths


def _edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the .keras file `src` whose config.json went through `edit`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


def _layer(config: dict[str, Any], index: int = 0) -> dict[str, Any]:
    layer: dict[str, Any] = config["config"]["layers"][index]
    return layer


def _tfsm(config: dict[str, Any]) -> None:
    _layer(config, 1).update(class_name="TFSMLayer", config={"filepath": "/srv/other-user-model"})


def _foreign_module(config: dict[str, Any]) -> None:
    _layer(config, 1)["module"] = "subprocess"


def _custom_object(config: dict[str, Any]) -> None:
    _layer(config, 1)["registered_name"] = "evil_pkg>Backdoor"


def _file_vocabulary(config: dict[str, Any]) -> None:
    _layer(config, 1).update(class_name="StringLookup", config={"vocabulary": "/etc/passwd"})


def _hidden_lambda(config: dict[str, Any]) -> None:
    _layer(config, 1)["config"]["activation"] = {"class_name": "__lambda__", "config": {"code": "AAAA"}}


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_tfsm, "TFSMLayer layer"),
        (_foreign_module, "from the module 'subprocess', outside Keras"),
        (_custom_object, "custom object 'evil_pkg>Backdoor'"),
        (_file_vocabulary, "vocabulary is read from the file '/etc/passwd'"),
        (_hidden_lambda, "serialized Python function"),
    ],
)
def test_edited_keras_config_is_refused(
    benign: dict[str, Path], tmp_path: Path, edit: Callable[[dict[str, Any]], None], words: str
) -> None:
    path = _edited(benign["keras"], tmp_path / "m.keras", edit)
    with pytest.raises(UnsafeKerasConfig, match="Parry refuses it") as info:
        check_keras_file(path)
    assert words in str(info.value)
    with pytest.raises(ModelLoadError, match=words.split("'")[0]):
        load_model(path)


def test_lambda_is_refused_in_keras_and_h5_before_keras_reads_it(benign: dict[str, Path]) -> None:
    for name in ("lambda.keras", "lambda.h5"):
        suffix = "." + name.split(".")[1]
        with pytest.raises(ModelLoadError, match="Lambda layer"):
            vet_keras_file(benign[name], suffix)
        with pytest.raises(ModelLoadError, match="Lambda layer"):
            load_model(benign[name])


def test_benign_keras_and_h5_pass_and_load(benign: dict[str, Path]) -> None:
    check_keras_file(benign["keras"])
    vet_keras_file(benign["keras"], ".keras")
    vet_keras_file(benign["h5"], ".h5")
    assert load_model(benign["keras"]).num_classes == 3
    assert load_model(benign["h5"]).num_classes == 3


def test_keras2_style_lambda_in_json_is_refused() -> None:
    legacy = {"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {}}]}}
    check_config(legacy)
    legacy["config"]["layers"].append({"function": ["base64code", None, None], "function_type": "lambda"})  # type: ignore[index]
    with pytest.raises(UnsafeKerasConfig, match="serialized Python function"):
        check_config(legacy)


def test_h5_external_link_virtual_and_external_datasets_are_refused(
    benign: dict[str, Path], tmp_path: Path
) -> None:
    secret = tmp_path / "other.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("w", data=np.arange(4.0))
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(4.0).tobytes())

    def variant(name: str, add: Callable[[h5py.File], None]) -> Path:
        path = tmp_path / f"{name}.h5"
        path.write_bytes(benign["h5"].read_bytes())
        with h5py.File(path, "a") as f:
            add(f["model_weights"])
        return path

    def link(g: Any) -> None:
        g["stolen"] = h5py.ExternalLink(str(secret), "/w")

    def virtual(g: Any) -> None:
        layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(secret), "w", shape=(4,))
        g.create_virtual_dataset("vds", layout)

    def external(g: Any) -> None:
        g.create_dataset("ext", shape=(4,), dtype="f8", external=[(str(raw), 0, 32)])

    for name, add, words in (
        ("link", link, "links /model_weights/stolen to another file"),
        ("virtual", virtual, "is virtual"),
        ("external", external, "is stored in external files"),
    ):
        path = variant(name, add)
        with pytest.raises(UnsafeKerasConfig, match=words):
            check_h5_file(path)
        with pytest.raises(ModelLoadError, match=words):
            load_model(path)


def test_external_link_inside_the_keras_weights_is_refused(benign: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "w.h5"
    with zipfile.ZipFile(benign["keras"]) as zf:
        weights.write_bytes(zf.read("model.weights.h5"))
    with h5py.File(weights, "a") as f:
        f["layers"]["stolen"] = h5py.ExternalLink("/etc/hostname.h5", "/")
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(benign["keras"]) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = weights.read_bytes() if item.filename == "model.weights.h5" else zin.read(item)
            zout.writestr(item, data)
    with pytest.raises(ModelLoadError, match="links /layers/stolen to another file"):
        vet_keras_file(path, ".keras")


def test_keras_without_config_and_h5_without_model_config(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.weights.h5", b"")
    path = tmp_path / "m.keras"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeKerasConfig, match="no config.json"):
        check_keras_file(path)
    weights_only = tmp_path / "w.h5"
    with h5py.File(weights_only, "w") as f:
        f.create_dataset("w", data=np.zeros(2))
    with pytest.raises(UnsafeKerasConfig, match="no model_config"):
        check_h5_file(weights_only)


def test_keras_version_floor() -> None:
    check_keras_version()  # the installed one
    check_keras_version("3.14.0")
    check_keras_version("4.0.1")
    for old in ("3.13.2", "3.3.3", "2.15.0"):
        with pytest.raises(ModelLoadError, match="Keras 3.14 or newer"):
            check_keras_version(old)


def test_a_group_linked_into_itself_ends_the_walk(tmp_path: Path) -> None:
    path = tmp_path / "loop.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("a")
        group["loop"] = group
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
    check_h5_file(path)
