"""A malformed `.keras` gets a sentence about what is malformed, from the real Keras loader, never the
"custom object 'Sequential'" that a built-in class Keras could not rebuild used to be called."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.vetting.keras_config import MalformedKerasConfig, check_keras_file
from workers.models.errors import ModelLoadError
from workers.models.loading import load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The members of a small Sequential .keras file, and the weights of a wider twin."""
    import keras

    root = tmp_path_factory.mktemp("keras_errors")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(root / "m.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)]).save(root / "wide.keras")
    with zipfile.ZipFile(root / "m.keras") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with zipfile.ZipFile(root / "wide.keras") as zf:
        members["wide.weights.h5"] = zf.read("model.weights.h5")
    return members


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if name != "wide.weights.h5":
                zf.writestr(name, data)
    return path


def _with_config(saved: dict[str, bytes], tmp_path: Path, edit: Callable[[Any], Any]) -> Path:
    config = json.loads(saved["config.json"])
    config = edit(config) or config
    return _write(tmp_path / "m.keras", {**saved, "config.json": json.dumps(config).encode()})


def _error(path: Path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and "custom object" not in message and "Sequential'" not in message
    assert str(path.parent) not in message
    return message


def _without(obj: dict[str, Any], key: str) -> None:
    del obj[key]


def _dense(config: dict[str, Any]) -> dict[str, Any]:
    layer: dict[str, Any] = config["config"]["layers"][1]
    return layer


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: _dense(c)["config"].update(units="three"),
         "configuration is malformed: Keras cannot rebuild its Dense layer (Received an invalid value for "
         "`units`"),
        (lambda c: _dense(c)["config"].update(bogus=1),
         "Keras cannot rebuild its Dense layer (Unrecognized keyword arguments passed to Dense"),
        (lambda c: _dense(c).update(module="keras.layers.core"),
         "names the module keras.layers.core for its Dense, which this Keras"),
        (lambda c: _without(c["config"], "layers"),
         "config.json is malformed: the Sequential model has no 'layers'"),
        (lambda c: [1, 2], "config.json is malformed: the model is a list, not an object"),
        (lambda c: c.update(config="oops"), "the model (Sequential) has a string as its 'config'"),
        (lambda c: _without(_dense(c), "config"), "layer 1 (Dense) has no 'config'"),
    ],
)  # fmt: skip
def test_a_malformed_configuration_says_what_is_malformed(
    saved: dict[str, bytes], tmp_path: Path, edit: Callable[[Any], Any], expected: str
) -> None:
    assert expected in _error(_with_config(saved, tmp_path, edit))


def test_structural_problems_are_found_without_keras(saved: dict[str, bytes], tmp_path: Path) -> None:
    # The API runs this at upload: a 422 at once instead of a rejection after a worker tried.
    path = _with_config(saved, tmp_path, lambda c: c["config"].update(layers=[]))
    with pytest.raises(MalformedKerasConfig, match="'layers' is an empty list"):
        check_keras_file(path)
    check_keras_file(_write(tmp_path / "ok.keras", saved))


def test_weights_that_do_not_fit_the_layers_name_the_shapes(saved: dict[str, bytes], tmp_path: Path) -> None:
    path = _write(tmp_path / "m.keras", {**saved, "model.weights.h5": saved["wide.weights.h5"]})
    message = _error(path)
    assert "weights do not fit its layers" in message and "(4, 5) in the file but (4, 3)" in message


def test_a_missing_file_names_no_server_path(tmp_path: Path) -> None:
    from workers.models.keras import load_keras

    deep = tmp_path / "srv" / "parry-data" / "blobs"
    deep.mkdir(parents=True)
    with pytest.raises(ModelLoadError) as info:
        load_keras(deep / "nope", ".keras")
    assert str(tmp_path) not in str(info.value)
